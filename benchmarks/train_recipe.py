"""The spleen training recipe of MONAI's fast-training tutorial, built from MONAI's own classes.

Model ``monai.networks.nets.UNet`` (the tutorial's channels on a GPU, fewer on the CPU preset),
loss ``DiceCELoss(to_onehot_y=True, softmax=True)``, optimiser ``monai.optimizers.Novograd`` for
every arm (the tutorial's fast recipe; one optimiser for all arms, so the arms differ only in how
data reaches the model), AMP on a GPU, validation by ``sliding_window_inference`` and foreground
``DiceMetric`` on cached validation volumes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

KEYS = ["image", "label"]
FG_KEY, BG_KEY = "label_fg_indices", "label_bg_indices"
SCALE = {"a_min": -57, "a_max": 164, "b_min": 0.0, "b_max": 1.0, "clip": True}


#: Published time-to-Dice figures, labelled with their source and hardware (not measured here).
PUBLISHED = [
    {
        "source": "MONAI fast-training tutorial (acceleration/fast_training_tutorial.ipynb)",
        "hardware": "NVIDIA A100",
        "target": 0.94,
        "time_to_target_s": {"regular": 13063, "fast": 120},
    },
    {
        "source": "MONAI fast-training tutorial",
        "hardware": "NVIDIA V100",
        "target": 0.95,
        "time_to_target_s": {"regular": 11344, "fast": 56},
    },
    {
        "source": "NVIDIA Clara Train 3.0 release chart (spleen)",
        "hardware": "NVIDIA V100 GPU (as labelled in the chart's description; not re-verified here)",
        "target": None,
        "time_to_target_h": {"baseline": 65, "batch_by_transform": 18.2, "smartcache": 9.6, "both": 4.4},
    },
]


@dataclass(frozen=True)
class TrainConfig:
    """One scale of the experiment: data, chain geometry, model size, optimiser, stopping rule.

    Args:
        preset: look-alike data preset (``fastpipe synth``) when no real folder is given.
        pixdim: ``Spacingd`` target spacing (mm).
        patch: crop size (voxels).
        val_roi: sliding-window size of validation (voxels; the tutorial's 160 at 1.5 x 1.5 x 2 mm;
            ``None``: ``patch``).
        sw_batch_size: windows per forward pass in validation (the tutorial's 4).
        num_samples: crops per volume (``RandCropByPosNegLabeld``).
        batch_size: volumes per batch (x ``num_samples`` crops per step).
        channels, strides: ``monai.networks.nets.UNet`` widths and strides.
        lr: Novograd learning rate.
        target: foreground validation Dice that stops an arm.
        max_epochs, max_s: per-arm budget (passes over the training volumes, i.e. epochs of a full
            dataset: a SmartCache arm gets twice as many of its half epochs; seconds from the start of
            the dataset build).
        val_interval: validate every this many passes over the training volumes (counted in crops seen:
            the SmartCache arm's epoch covers its window only, so it validates every other epoch).
        val_volumes: volumes held out for validation (the last ones of the list).
        threads: workers/threads of every arm's loader and cache fill.
        seed: one seed for the split, the model's initial weights and the random suffix.
        interleaved_rounds: rounds of :mod:`benchmarks.train_interleaved` after the arms (0: none).
    """

    preset: str = "spleen-train"
    pixdim: tuple[float, float, float] = (3.0, 3.0, 3.0)
    patch: tuple[int, int, int] = (32, 32, 32)
    val_roi: tuple[int, int, int] | None = (48, 48, 48)
    sw_batch_size: int = 4
    num_samples: int = 4
    batch_size: int = 2
    channels: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2)
    lr: float = 2e-3
    target: float = 0.85
    max_epochs: int = 60
    max_s: float = 150.0
    val_interval: int = 1
    val_volumes: int = 4
    threads: int = 2
    seed: int = 0
    interleaved_rounds: int = 6


#: The CPU preset of ``make bench-train``, the tutorial's full scale (``make gpu-bench``), and a
#: seconds-long smoke scale for tests.
CONFIGS: dict[str, TrainConfig] = {
    "cpu": TrainConfig(),
    "smoke": TrainConfig(
        preset="spleen-tiny",
        patch=(16, 16, 16),
        val_roi=None,
        num_samples=2,
        channels=(4, 8, 16, 32),
        max_epochs=2,
        max_s=120.0,
        val_volumes=1,
        threads=1,
        interleaved_rounds=0,
    ),
    "tutorial": TrainConfig(
        preset="spleen-full",
        pixdim=(1.5, 1.5, 2.0),
        patch=(96, 96, 96),
        val_roi=(160, 160, 160),
        batch_size=4,  # the tutorial's ThreadDataLoader(batch_size=4): 16 crops a step
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        lr=2e-3,  # the tutorial's fast arm: Novograd at 10x its Adam rate of 2e-4
        target=0.94,
        max_epochs=600,
        max_s=900.0,
        val_volumes=9,
        threads=8,
        interleaved_rounds=0,
    ),
}


def config(name: str, **overrides: Any) -> TrainConfig:
    """A named config with some fields replaced (``None`` values are ignored)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown train config {name!r}; expected one of {sorted(CONFIGS)}")
    return replace(CONFIGS[name], **{k: v for k, v in overrides.items() if v is not None})


def make_model(cfg: TrainConfig) -> torch.nn.Module:
    """The tutorial's ``monai.networks.nets.UNet`` (3D, 1 -> 2 channels, 2 residual units, batch norm)."""
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=cfg.channels,
        strides=cfg.strides,
        num_res_units=2,
        norm=Norm.BATCH,
    )


def make_loss() -> torch.nn.Module:
    """``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)``."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``monai.optimizers.Novograd`` at ``cfg.lr`` (the tutorial's fast recipe, used for every arm)."""
    from monai.optimizers import Novograd

    return Novograd(model.parameters(), lr=cfg.lr)


def prefix(T: Any, cfg: TrainConfig) -> list[Any]:
    """The tutorial's deterministic prefix from ``fastpipe.transforms`` or ``monai.transforms``."""
    return [
        T.LoadImaged(KEYS),
        T.EnsureChannelFirstd(KEYS),
        T.Orientationd(KEYS, axcodes="RAS"),
        T.Spacingd(KEYS, pixdim=cfg.pixdim, mode=("bilinear", "nearest")),
        T.ScaleIntensityRanged("image", **SCALE),
        T.CropForegroundd(KEYS, source_key="image"),
        # background centres only where the image is above 0 (inside the body), as the tutorial
        T.FgBgToIndicesd("label", image_key="image"),
    ]


def crop_args(cfg: TrainConfig) -> dict[str, Any]:
    """``RandCropByPosNegLabeld``'s arguments, the same for fastpipe and MONAI."""
    return {
        "label_key": "label",
        "spatial_size": cfg.patch,
        "pos": 1,
        "neg": 1,
        "num_samples": cfg.num_samples,
        "fg_indices_key": FG_KEY,
        "bg_indices_key": BG_KEY,
    }


class Validator:
    """Foreground Dice of argmax predictions over cached validation volumes (sliding window).

    Args:
        volumes: items with ``image`` ``(1, X, Y, Z)`` and ``label`` tensors (already on ``device``
            or moved there here), e.g. the entries of a cached dataset.
        cfg: gives the window size (``val_roi``) and windows per pass (``sw_batch_size``).
        device: where inference runs.
        amp: autocast during inference.
    """

    def __init__(self, volumes: list[dict[str, Any]], cfg: TrainConfig, device: torch.device, amp: bool):
        from monai.metrics import DiceMetric

        self.volumes, self.cfg, self.device, self.amp = volumes, cfg, device, amp
        self.metric = DiceMetric(include_background=False, reduction="mean")

    def __call__(self, model: torch.nn.Module) -> float:
        from monai.inferers import sliding_window_inference
        from monai.networks.utils import one_hot

        model.eval()
        self.metric.reset()
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp):
            for item in self.volumes:
                img = torch.as_tensor(item["image"]).to(self.device).float()[None]
                lab = torch.as_tensor(item["label"]).to(self.device)[None]
                roi = self.cfg.val_roi or self.cfg.patch
                logits = sliding_window_inference(img, roi, self.cfg.sw_batch_size, model, overlap=0.25)
                pred = one_hot(logits.argmax(1, keepdim=True), 2)
                self.metric(y_pred=pred, y=one_hot(lab.long(), 2))
        model.train()
        return float(self.metric.aggregate().item())


def recipe_text(cfg: TrainConfig) -> dict[str, str]:
    """The recipe in words, for the JSON."""
    roi = cfg.val_roi or cfg.patch
    return {
        "model": "monai.networks.nets.UNet(spatial_dims=3, 1 -> 2, num_res_units=2, norm=BATCH)",
        "loss": "monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)",
        "optimizer": "monai.optimizers.Novograd, every arm (only the data side differs)",
        "validation": f"monai.inferers.sliding_window_inference(roi {list(roi)}, sw_batch_size {cfg.sw_batch_size}, "
        "overlap 0.25) + monai.metrics.DiceMetric(include_background=False)",
        "indices": "FgBgToIndicesd('label', image_key='image'): background centres where the image is above 0",
        "suffix": "RandCropByPosNegLabeld, RandFlipd x3 (p=0.1), RandRotate90d (p=0.1), RandShiftIntensityd (p=0.5)",
    }
