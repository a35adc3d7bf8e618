"""MONAI's spleen tutorial as a user brings it: only the dataset and loader lines become fastpipe's.

Each test runs the same script over MONAI's classes and fastpipe's on tiny look-alike volumes and
compares what the user sees: shapes, dtypes, values of the deterministic part, metadata, files.
"""

from __future__ import annotations

import glob
import os

import monai
import monai.transforms as M
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, decollate_batch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from monai.utils import first
from transforms.test_translate import monai_prefix

import fastpipe as fp
from fastpipe.datasets import load_decathlon_datalist

KEYS = ["image", "label"]
ROI = (32, 32, 16)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("spleen")
    return load_decathlon_datalist(
        fp.datasets.synthesize(root, preset="spleen-tiny", num_volumes=3, progress=False)
    )


def _prefix() -> list:
    """The tutorial's deterministic prefix without its indices step (the one test_translate builds)."""
    return monai_prefix()[:-1]


def train_chain() -> M.Compose:
    """The fast-training tutorial's chain (its crop arguments included), crops made tiny."""
    return M.Compose(
        [
            *_prefix(),
            M.EnsureTyped(KEYS, device="cpu", track_meta=False),
            M.RandCropByPosNegLabeld(
                KEYS, "label", ROI, pos=1, neg=1, num_samples=2, image_key="image", image_threshold=0
            ),
            M.RandFlipd(KEYS, spatial_axis=[0], prob=0.1),
            M.RandRotate90d(KEYS, prob=0.1, max_k=3),
            M.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]
    )


def val_chain() -> M.Compose:
    return M.Compose(_prefix())


def _loop(train_loader, val_loader) -> tuple[list, float]:
    """Two epochs of the tutorial's training step and a validation pass after each."""
    torch.manual_seed(0)
    model = UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    loss_function, opt = (
        DiceCELoss(to_onehot_y=True, softmax=True),
        torch.optim.Adam(model.parameters(), 1e-3),
    )
    dice = DiceMetric(include_background=False, reduction="mean")
    post_pred, post_label = M.AsDiscrete(argmax=True, to_onehot=2), M.AsDiscrete(to_onehot=2)
    seen = []
    for _ in range(2):
        model.train()
        for batch in train_loader:
            x, y = batch["image"], batch["label"]
            seen.append((tuple(x.shape), x.dtype, y.dtype.is_floating_point or y.dtype == torch.uint8))
            opt.zero_grad()
            loss = loss_function(model(x), y)
            loss.backward()
            opt.step()
            assert torch.isfinite(loss)
        model.eval()
        with torch.no_grad():
            for batch in val_loader:
                out = sliding_window_inference(batch["image"], ROI, 8, model, overlap=0.0)
                assert out.shape[2:] == batch["image"].shape[2:]
                preds = [post_pred(i) for i in decollate_batch(out)]
                labels = [post_label(i) for i in decollate_batch(batch["label"])]
                dice(y_pred=preds, y=labels)
        metric = float(dice.aggregate().item())
        dice.reset()
    return seen, metric


def test_tutorial_loop_matches_monai_shapes_and_runs(files) -> None:
    monai.utils.set_determinism(0)
    mt = monai.data.CacheDataset(files[:2], train_chain(), progress=False)
    mv = monai.data.CacheDataset(files[2:], val_chain(), progress=False)
    ref, _ = _loop(
        monai.data.ThreadDataLoader(mt, batch_size=2, shuffle=True),
        monai.data.ThreadDataLoader(mv, batch_size=1),
    )
    ft = fp.CacheDataset(files[:2], train_chain(), seed=0)
    fv = fp.CacheDataset(files[2:], val_chain())
    got, metric = _loop(
        fp.ThreadDataLoader(ft, batch_size=2, shuffle=True), fp.ThreadDataLoader(fv, batch_size=1)
    )
    monai.utils.set_determinism(None)
    assert [s[:2] for s in got] == [s[:2] for s in ref] and all(s[2] for s in got)
    assert 0.0 <= metric <= 1.0


def test_validation_items_are_monai_values(files) -> None:
    chain = val_chain()
    ours, theirs = fp.CacheDataset(files, chain), monai.data.CacheDataset(files, chain, progress=False)
    for i in range(len(files)):
        a, b = theirs[i], ours[i]
        assert a["image"].shape == b["image"].shape  # variable sizes, one per volume
        torch.testing.assert_close(b["image"], a["image"].as_tensor(), atol=1e-5, rtol=0)
        assert torch.equal(b["label"].float(), a["label"].as_tensor())
        np.testing.assert_allclose(b["image_meta_dict"]["affine"], a["image"].affine, atol=1e-6)
        assert b["image_meta_dict"]["filename_or_obj"] == a["image"].meta["filename_or_obj"]


def test_chain_used_once_by_monai_stays_on_the_fast_path(files) -> None:
    """The tutorial looks at one item (``first(DataLoader(Dataset(files, chain)))``) before training:
    MONAI's crop then keeps the centres it drew, which fastpipe took for centres fixed by the user and
    ran the crop and everything after it per item, as MONAI objects, with a misleading reason."""
    chain = train_chain()
    first(DataLoader(Dataset(files[:1], chain), batch_size=1))
    text = fp.CacheDataset(files[:1], chain).describe()
    assert "fast path: every step is cached or batched" in text, text
    assert "fixed on the MONAI object" not in text


def _save(ds, out: str, **kw) -> list[tuple]:
    for batch in DataLoader(ds, batch_size=1):
        for item in decollate_batch(batch):
            item["pred"] = item["label"]
            M.SaveImaged("pred", output_dir=out, separate_folder=False, print_log=False, **kw)(item)
    found = []
    for path in sorted(glob.glob(os.path.join(out, "*"))):
        img = nib.load(path)
        found.append(
            (os.path.basename(path), img.shape, img.affine.round(4).tolist(), float(img.get_fdata().sum()))
        )
    return found


@pytest.mark.parametrize("resample", [False, True])
def test_save_prediction_with_the_meta_dict_matches_monai(files, tmp_path, resample) -> None:
    chain = val_chain()
    theirs = _save(
        monai.data.CacheDataset(files[:2], chain, progress=False), str(tmp_path / "m"), resample=resample
    )
    ours = _save(
        fp.CacheDataset(files[:2], chain), str(tmp_path / "f"), resample=resample, meta_keys="image_meta_dict"
    )
    assert ours == theirs and len(ours) == 2


def _invert(ds, chain) -> list:
    inv = M.Invertd("pred", transform=chain, orig_keys="image", nearest_interp=True)
    out = []
    for batch in DataLoader(ds, batch_size=1):
        batch["pred"] = batch["label"].float()
        out += [inv(i)["pred"] for i in decollate_batch(batch)]
    return out


def test_invertd_translate_false_gives_monai_inverse_and_true_raises_clearly(files) -> None:
    chain = val_chain()
    theirs = _invert(monai.data.CacheDataset(files[:1], chain, progress=False), chain)
    ours = _invert(fp.CacheDataset(files[:1], chain, translate=False), chain)
    assert ours[0].shape == theirs[0].shape == (1, *nib.load(files[0]["label"]).shape)  # the original space
    torch.testing.assert_close(ours[0].as_tensor(), theirs[0].as_tensor())
    np.testing.assert_allclose(ours[0].affine, theirs[0].affine)
    with pytest.raises(RuntimeError) as info, pytest.warns(UserWarning, match="translate=False"):
        _invert(fp.CacheDataset(files[:1], chain), chain)
    assert "translate=False" in str(info.value.__cause__)


def test_validation_batches_of_different_sizes_raise_as_monai_and_pad_collate_works(files) -> None:
    """batch_size=2 over validation volumes of different sizes: MONAI's collate raises (its hint names
    pad_list_data_collate); fastpipe's loader handed the model a list of tensors instead."""
    chain = val_chain()
    ours = fp.CacheDataset(files[:2], chain)
    with pytest.raises(ValueError, match="different shapes.*pad_list_data_collate"):
        next(iter(fp.ThreadDataLoader(ours, batch_size=2)))
    padded = next(iter(fp.ThreadDataLoader(ours, batch_size=2, collate_fn=monai.data.pad_list_data_collate)))
    theirs = next(
        iter(
            DataLoader(
                monai.data.CacheDataset(files[:2], chain, progress=False),
                batch_size=2,
                collate_fn=monai.data.pad_list_data_collate,
            )
        )
    )
    torch.testing.assert_close(padded["image"].as_tensor(), theirs["image"].as_tensor(), atol=1e-5, rtol=0)
