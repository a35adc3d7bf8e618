"""Bad input gets a clear error that names the file and the problem."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

from fastpipe.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_files import KEYS, affine, phantom, write  # noqa: E402


def load(path) -> dict:
    return LoadImaged("image")({"image": str(path)})


def test_missing_file(tmp_path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(FileNotFoundError, match="nope.nii.gz.*no such file"):
        load(path)


def test_truncated_gz(tmp_path):
    path = Path(write(tmp_path / "t.nii.gz", phantom((40, 40, 20))[0], np.eye(4)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"t\.nii\.gz: truncated file"):
        load(path)


def test_truncated_uncompressed(tmp_path):
    path = Path(write(tmp_path / "t.nii", phantom((40, 40, 20))[0], np.eye(4)))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"t\.nii: truncated file"):
        load(path)


def test_corrupt_gzip(tmp_path):
    path = Path(write(tmp_path / "c.nii.gz", phantom((40, 40, 20))[0], np.eye(4)))
    raw = bytearray(path.read_bytes())
    raw[200:4000] = bytes(np.random.default_rng(0).integers(0, 256, 3800, dtype=np.uint8))
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"c\.nii\.gz: (corrupt gzip|truncated|not a)"):
        load(path)


@pytest.mark.parametrize("gz", [False, True])
def test_not_nifti(tmp_path, gz):
    path = tmp_path / ("notes.nii.gz" if gz else "notes.nii")
    text = b"patient notes, not an image\n" * 40
    path.write_bytes(gzip.compress(text) if gz else text)
    with pytest.raises(ValueError, match=r"notes\.nii(\.gz)?: not a NIfTI file"):
        load(path)


def test_2d_data(tmp_path):
    path = write(tmp_path / "slice.nii.gz", np.zeros((32, 32), np.int16), np.eye(4))
    with pytest.raises(ValueError, match=r"slice\.nii\.gz: expected a 3D volume, got 2D"):
        load(path)


def test_4d_data(tmp_path):
    path = write(tmp_path / "series.nii.gz", np.zeros((16, 16, 8, 3), np.int16), np.eye(4))
    with pytest.raises(
        ValueError, match=r"series\.nii\.gz: expected a 3D volume, got 4D data of shape \(16, 16, 8, 3\)"
    ):
        load(path)


def test_nan_voxels(tmp_path):
    data = np.zeros((8, 8, 8), np.float32)
    data[1, 2, 3] = data[4, 4, 4] = np.nan
    path = write(tmp_path / "nan.nii.gz", data, np.eye(4))
    with pytest.raises(ValueError, match=r"nan\.nii\.gz: 2 of 512 voxels are NaN"):
        load(path)
    assert np.isnan(LoadImaged("image", check_nan=False)({"image": path})["image"].numpy()).sum() == 2


def test_nan_voxels_through_a_monai_chain_name_the_way_out(tmp_path):
    """A translated MONAI ``LoadImaged`` cannot take ``check_nan``: the error says what to pass instead,
    and that way loads the file as MONAI does."""
    import monai.transforms as M

    import fastpipe as fp

    data = np.zeros((8, 8, 8), np.float32)
    data[1, 2, 3] = np.nan
    items = [{"image": write(tmp_path / "nan.nii.gz", data, np.eye(4))}]
    chain = lambda: M.Compose([M.LoadImaged("image"), M.EnsureChannelFirstd("image")])  # noqa: E731
    with pytest.raises(ValueError, match=r"nan\.nii\.gz: 1 of 512 voxels are NaN.*translate=False"):
        fp.CacheDataset(items, chain(), progress=False)
    out = fp.CacheDataset(items, chain(), progress=False, translate=False)[0]["image"]
    assert np.isnan(np.asarray(out)).sum() == 1


def _pair(tmp_path, img_shape, lab_shape, img_aff, lab_aff) -> dict:
    return {
        "image": write(tmp_path / "ct.nii.gz", np.zeros(img_shape, np.int16), img_aff),
        "label": write(tmp_path / "seg.nii.gz", np.zeros(lab_shape, np.uint8), lab_aff),
    }


@pytest.mark.parametrize(
    "transform", [Orientationd(KEYS, axcodes="RAS"), Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0))]
)
def test_image_label_shape_mismatch(tmp_path, transform):
    item = _pair(tmp_path, (20, 20, 10), (20, 20, 11), np.eye(4), np.eye(4))
    chain = Compose([LoadImaged(KEYS), EnsureChannelFirstd(KEYS), transform])
    with pytest.raises(
        ValueError, match=r"seg\.nii\.gz.*spatial shape \(20, 20, 11\).*ct\.nii\.gz.*\(20, 20, 10\)"
    ):
        chain(item)


@pytest.mark.parametrize(
    "transform", [Orientationd(KEYS, axcodes="RAS"), Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0))]
)
def test_image_label_affine_mismatch(tmp_path, transform):
    item = _pair(tmp_path, (20, 20, 10), (20, 20, 10), affine((1, 1, 2)), affine((1, 1, 2.5)))
    chain = Compose([LoadImaged(KEYS), EnsureChannelFirstd(KEYS), transform])
    with pytest.raises(ValueError, match=r"seg\.nii\.gz.*has affine.*ct\.nii\.gz.*one voxel grid"):
        chain(item)
