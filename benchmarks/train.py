"""Train mode (``make bench ARGS=--train``): time to a validation foreground Dice, regular vs fast.

Reproduces the shape of MONAI's fast-training table: the *regular* arm is MONAI's
Dataset + a torch DataLoader with worker processes, the *fast* arm is fastpipe's CacheDataset with
ToDevice-then-cache + ThreadDataLoader + batched crops. Both train the same UNet with DiceCE and
SGD (AMP on a GPU), validate with the same sliding-window inferer, and stop at the Dice target.
On a CPU it is a smoke check at a tiny scale.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks import workload
from benchmarks.common import spread, sync, waited_batches
from benchmarks.unet import UNet3D, dice_ce_loss, foreground_dice

#: MONAI fast-training tutorial (A100), seconds to foreground validation Dice 0.94, and per epoch.
PUBLISHED = {
    "monai_tutorial_a100": {
        "regular_s": 13063,
        "fast_s": 120,
        "regular_epoch_s": [62, 113],
        "fast_epoch_s": 1.5,
    },
    "monai_tutorial_v100_dice095": {"regular_s": 11344, "fast_s": 56},
    "clara_train3_v100_hours": {"baseline": 65, "batch_by_transform": 18.2, "smartcache": 9.6, "both": 4.4},
}


def _loaders(arm: str, train: list[dict], val: list[dict], device: torch.device, threads: int, bs: int):
    if arm == "regular":
        from monai.data import Dataset, list_data_collate
        from monai.transforms import Compose

        ds = Dataset(train, Compose(workload.monai_chain()))
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=bs,
            shuffle=True,
            num_workers=threads,
            collate_fn=list_data_collate,
            persistent_workers=True,
        )
        val_ds = Dataset(val, Compose(workload.monai_chain(crop=False)))
        return loader, val_ds
    import fastpipe as fp

    dev = None if device.type == "cpu" else str(device)
    ds = fp.CacheDataset(train, workload.fastpipe_chain(device=dev), num_workers=threads, progress=False)
    loader = fp.ThreadDataLoader(ds, batch_size=bs, shuffle=True, persistent_workers=True)
    val_ds = fp.CacheDataset(
        val, workload.fastpipe_chain(device=dev, crop=False), num_workers=threads, progress=False
    )
    return loader, val_ds


def validate(model: torch.nn.Module, val_ds: Any, device: torch.device, amp: bool) -> float:
    """Mean foreground Dice of argmax predictions over the validation volumes (sliding window)."""
    from monai.inferers import sliding_window_inference

    model.eval()
    scores = []
    with torch.no_grad(), torch.autocast(device.type, enabled=amp):
        for i in range(len(val_ds)):
            item = val_ds[i]
            img = torch.as_tensor(item["image"]).to(device)[None].float()
            logits = sliding_window_inference(img, workload.PATCH, 4, model, overlap=0.25)
            scores.append(foreground_dice(logits.argmax(1)[0], torch.as_tensor(item["label"]).to(device)[0]))
    model.train()
    return sum(scores) / len(scores)


def train_arm(arm: str, train: list[dict], val: list[dict], opts: dict[str, Any]) -> dict[str, Any]:
    """Train one arm until the Dice target or the epoch/time budget; its timeline and totals."""
    device = opts["device"]
    amp = device.type == "cuda"
    torch.manual_seed(0)
    t_start = time.perf_counter()
    loader, val_ds = _loaders(arm, train, val, device, opts["threads"], opts["batch_size"])
    fill_s = time.perf_counter() - t_start
    model = UNet3D(channels=opts["channels"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=opts["lr"], momentum=0.9, weight_decay=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    timeline, epochs, reached = [], [], None

    def to_device(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"].to(device, non_blocking=True).float(), batch["label"].to(
            device, non_blocking=True
        )

    for epoch in range(1, opts["epochs"] + 1):
        t0, waited, steps = time.perf_counter(), 0.0, 0
        for (img, lab), wait_s in waited_batches(loader, device, to_device):
            waited += wait_s
            with torch.autocast(device.type, enabled=amp):
                loss = dice_ce_loss(model(img), lab)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            steps += 1
        sync(device)
        wall = time.perf_counter() - t0
        epochs.append(
            {
                "epoch": epoch,
                "s": wall,
                "data_wait_fraction": waited / wall,
                "steps": steps,
                "loss": float(loss.detach()),
            }
        )
        if epoch % opts["val_interval"] == 0 or epoch == opts["epochs"]:
            dice = validate(model, val_ds, device, amp)
            timeline.append({"epoch": epoch, "t_s": time.perf_counter() - t_start, "dice": dice})
            if dice >= opts["target"] and reached is None:
                reached = timeline[-1]
                break
        if time.perf_counter() - t_start > opts["max_s"]:
            break
    if hasattr(loader, "close"):
        loader.close()
    return {
        "arm": arm,
        "fill_s": fill_s,
        "epoch_s": spread([e["s"] for e in epochs[1:]] or [epochs[0]["s"]]),
        "data_wait_fraction": spread([e["data_wait_fraction"] for e in epochs[1:]] or [0.0]),
        "epochs": epochs,
        "validation": timeline,
        "time_to_target_s": reached["t_s"] if reached else None,
        "best_dice": max((v["dice"] for v in timeline), default=None),
        "total_s": time.perf_counter() - t_start,
    }


def run_train(data: list[dict], args: Any) -> dict[str, Any]:
    """Both arms on the same split; a GPU runs the tutorial's UNet, a CPU a tiny smoke-check scale."""
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    n_val = max(1, round(0.2 * len(data)))
    opts = {
        "device": device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "channels": (16, 32, 64, 128, 256) if gpu else (4, 8, 16, 32, 64),
        "epochs": getattr(args, "train_epochs", None) or (300 if gpu else 2),
        "val_interval": 1 if not gpu else 5,
        "lr": 0.1,
        "target": getattr(args, "dice_target", None) or 0.94,
        "max_s": getattr(args, "train_max_s", None) or (1500 if gpu else 300),
    }
    arms = {arm: train_arm(arm, data[:-n_val], data[-n_val:], opts) for arm in ("regular", "fast")}
    reg, fast = arms["regular"], arms["fast"]
    out: dict[str, Any] = {
        "device": str(device),
        "amp": gpu,
        "options": {k: str(v) for k, v in opts.items()},
        "arms": arms,
        "published": PUBLISHED,
    }
    out["epoch_speedup"] = reg["epoch_s"]["median"] / fast["epoch_s"]["median"]
    if reg["time_to_target_s"] and fast["time_to_target_s"]:
        out["time_to_target_speedup"] = reg["time_to_target_s"] / fast["time_to_target_s"]
    return out
