"""Each crop's ``{key}_meta_dict`` affine after the batched crop and its flips and turns: MONAI's."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import monai.transforms as M
import numpy as np
import pytest
import torch
from monai.data import CacheDataset as MonaiCacheDataset

import fastpipe as fp

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_files import KEYS, affine, write, write_pair  # noqa: E402

SIZE = (48, 48, 40)  # the padded volume: the crop is the whole of it, so MONAI's draws give the same crop


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("crop_affine")
    return [write_pair(tmp, affine((0.8, 0.8, 2.5), "LPS", angle_deg=20.0), shape=(40, 36, 30), seed=0)]


def chain(after: list) -> M.Compose:
    return M.Compose(
        [
            M.LoadImaged(KEYS),
            M.EnsureChannelFirstd(KEYS),
            M.Orientationd(KEYS, axcodes="RAS"),
            M.SpatialPadd(KEYS, SIZE),
            M.RandCropByPosNegLabeld(KEYS, "label", SIZE, pos=1, neg=1, num_samples=2),
            *after,
        ]
    )


AFTER = {
    "fused": lambda: [M.RandFlipd(KEYS, prob=1.0, spatial_axis=1), M.RandRotate90d(KEYS, prob=1.0, max_k=1)],
    "per_crop_turn": lambda: [
        M.RandFlipd("image", prob=1.0, spatial_axis=2),
        M.RandRotate90d(KEYS, 1.0, 1, (0, 2)),
    ],
    "on_the_batch": lambda: [
        M.RandGaussianNoised("image", prob=1.0, std=0.0),
        M.RandFlipd(KEYS, prob=1.0, spatial_axis=0),
        M.RandRotate90d(KEYS, prob=1.0, max_k=1),
    ],
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(AFTER))
def test_crop_flip_turn_affines_equal_monais(files, case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's own deprecation chatter
        ours = fp.CacheDataset(files, chain(AFTER[case]()), progress=False, num_workers=1)[0]
        theirs = MonaiCacheDataset(files, chain(AFTER[case]()), progress=False)[0]
    for a, b in zip(ours, theirs, strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy().astype(a[key].numpy().dtype))
            meta = a[f"{key}_meta_dict"]
            np.testing.assert_allclose(meta["affine"].numpy(), b[key].affine.numpy(), atol=1e-9)
            np.testing.assert_allclose(meta["pixdim"], np.asarray(b[key].meta["pixdim"]), atol=1e-6)
            np.testing.assert_allclose(meta["pixdim"][1:4], b[key].pixdim.numpy(), atol=1e-6)


@pytest.mark.timeout(120)
def test_every_random_crop_affine_maps_its_voxels_where_the_volume_has_them(tmp_path):
    """Voxel values encode their source index: each crop's affine must send each voxel where the
    volume's affine sends its source voxel (random centres, flips and turns, fused and not)."""
    shape, aff = (40, 36, 30), affine((0.8, 0.8, 2.5), "LPS", angle_deg=20.0)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    label = np.zeros(shape, np.uint8)
    label[10:20, 8:16, 5:12] = 1
    item = {
        "image": write(tmp_path / "coords.nii.gz", (x * 10000 + y * 100 + z).astype(np.float32), aff),
        "label": write(tmp_path / "label.nii.gz", label, aff),
    }
    after = [
        M.RandFlipd(KEYS, prob=0.5, spatial_axis=0),
        M.RandRotate90d(KEYS, prob=0.5, max_k=3),
        M.RandFlipd(KEYS, prob=0.5, spatial_axis=2),
        M.RandRotate90d(KEYS, prob=0.5, max_k=3, spatial_axes=(1, 2)),
    ]
    chain = [M.LoadImaged(KEYS), M.EnsureChannelFirstd(KEYS)]
    chain += [M.RandCropByPosNegLabeld(KEYS, "label", (12, 12, 12), pos=1, neg=1, num_samples=4), *after]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = fp.CacheDataset([item], chain, progress=False, num_workers=1, seed=3)
    corners = np.array([[i, j, k, 1.0] for i in (0, 11) for j in (0, 11) for k in (0, 11)])
    for _ in range(10):
        for crop in ds[0]:
            v = crop["image"][0].numpy().astype(np.int64)
            src = np.stack([v // 10000, v // 100 % 100, v % 100], -1)[tuple(corners[:, :3].astype(int).T)]
            want = aff @ np.c_[src, np.ones(len(src))].T
            got = crop["image_meta_dict"]["affine"].numpy() @ corners.T
            np.testing.assert_allclose(got, want, atol=1e-6)
            assert torch.equal(crop["label_meta_dict"]["affine"], crop["image_meta_dict"]["affine"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pad", [None, (48, 40, 36)], ids=["unpadded", "padded"])
def test_each_crop_carries_monais_patch_index_and_crop_center(tmp_path, pad):
    """The batched crop's per-crop metadata lacked MONAI's ``patch_index`` and ``crop_center``: SaveImaged
    on the decollated crops wrote one file per item (``<name>_crop.nii.gz``, each crop over the last),
    where MONAI writes ``_crop_0``, ``_crop_1``. ``crop_center`` is in the volume MONAI crops (padded)."""
    from monai.data import decollate_batch

    files = [write_pair(tmp_path, affine((1.5, 1.5, 2.0), "RAS"), shape=(40, 36, 30), seed=s) for s in (0, 1)]
    patch = (16, 12, 8)
    steps = [M.LoadImaged(KEYS), M.EnsureChannelFirstd(KEYS), *([M.SpatialPadd(KEYS, pad)] if pad else [])]
    crop = M.RandCropByPosNegLabeld(KEYS, "label", patch, pos=1, neg=1, num_samples=2)
    ds = fp.CacheDataset(files, M.Compose([*steps, crop]), progress=False, num_workers=1)
    batch = next(iter(fp.ThreadDataLoader(ds, batch_size=2)))
    crops = decollate_batch(batch)
    assert [int(c["image_meta_dict"]["patch_index"]) for c in crops] == [0, 1, 0, 1]
    for n, c in enumerate(crops):  # the window at crop_center - patch // 2 of MONAI's (padded) volume
        vol = M.Compose(steps)(dict(files[n // 2]))["image"]
        lo = [int(k) - p // 2 for k, p in zip(c["image_meta_dict"]["crop_center"], patch, strict=True)]
        window = vol[:, lo[0] : lo[0] + patch[0], lo[1] : lo[1] + patch[1], lo[2] : lo[2] + patch[2]]
        assert torch.equal(torch.as_tensor(c["image"]), window.as_tensor()), n
    out = tmp_path / "saved"
    save = M.SaveImaged(
        "image", output_dir=out, output_postfix="crop", separate_folder=False, print_log=False
    )
    for c in crops:
        save(c)
    names = [Path(f["image"]).name.split(".")[0] for f in files]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}_crop_{i}.nii.gz" for s in names for i in (0, 1)
    )
