"""LoadImaged / NIfTI reading: dtypes, layouts, scaling, metadata, gzip via isal."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fastpipe.transforms import LoadImaged
from fastpipe.transforms._nifti import read_nifti

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_corrupt import rewrite  # noqa: E402
from _nifti_files import affine, write  # noqa: E402


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32, np.float64])
def test_values_dtype_affine_match_nibabel(tmp_path, ext, dtype):
    rng = np.random.default_rng(0)
    data = (rng.normal(0, 100, (17, 13, 9))).astype(dtype)
    aff = affine((0.7, 0.8, 2.5), "LPS", angle_deg=10)
    path = write(tmp_path / f"v{ext}", data, aff)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "non-writable array" warning
        d = LoadImaged("image")({"image": path})
    ref = nib.load(path)
    img = d["image"]
    assert img.dtype == torch.from_numpy(np.zeros(0, dtype)).dtype
    np.testing.assert_array_equal(img.numpy(), np.asanyarray(ref.dataobj))
    meta = d["image_meta_dict"]
    np.testing.assert_allclose(meta["affine"].numpy(), ref.affine, atol=1e-6)
    assert meta["affine"].dtype == torch.float64
    assert meta["spatial_shape"] == (17, 13, 9)
    assert meta["filename_or_obj"] == path
    np.testing.assert_allclose(meta["pixdim"][1:4], (0.7, 0.8, 2.5), rtol=1e-6)  # MONAI's 8 values
    img.add_(1)  # the tensor owns writable memory


def test_scl_slope_inter_applied_as_float32(tmp_path):
    raw = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = write(tmp_path / "s.nii.gz", raw, np.eye(4), scl_slope=2.0, scl_inter=-1024.0)
    img = LoadImaged("image")({"image": path})["image"]
    assert img.dtype == torch.float32
    np.testing.assert_allclose(img.numpy(), np.asanyarray(nib.load(path).dataobj), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.int16, np.float64])
@pytest.mark.parametrize(("slope", "inter"), [(0.1, 0.3), (1e-3, 7.77), (1.0, 0.1)])
def test_scaling_gives_monais_float32_values_exactly(tmp_path, monkeypatch, dtype, slope, inter):
    """MONAI's reader (nibabel) scales in float64 and casts to float32; scaling in float32 rounded
    twice and gave other values (one ulp off) for thousands of voxels. Slabs: also across a slab edge."""
    import fastpipe.transforms._nifti as nifti

    monkeypatch.setattr(nifti, "_SCALE_SLAB", 17 * 13 * 2, raising=False)
    raw = np.random.default_rng(1).integers(-1024, 3000, (17, 13, 9)).astype(dtype)
    path = write(tmp_path / "s.nii.gz", raw, np.eye(4), scl_slope=slope, scl_inter=inter)
    img = LoadImaged("image")({"image": path})["image"]
    want = np.asanyarray(nib.load(path).dataobj).astype(np.float32)  # MONAI's LoadImaged default
    assert img.dtype == torch.float32
    np.testing.assert_array_equal(img.numpy(), want)


def test_big_endian_file(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    hdr = nib.Nifti1Header(endianness=">")
    path = str(tmp_path / "be.nii")
    nib.save(nib.Nifti1Image(data, np.eye(4), header=hdr), path)
    assert nib.load(path).header.endianness == ">"
    np.testing.assert_array_equal(read_nifti(path).array, data)


def test_nifti2_and_trailing_singleton_dim(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5, 1)
    path = str(tmp_path / "n2.nii.gz")
    nib.save(nib.Nifti2Image(data, np.eye(4)), path)
    img = LoadImaged("image")({"image": path})["image"]
    assert img.shape == (3, 4, 5)
    np.testing.assert_array_equal(img.numpy(), data[..., 0])


def test_options_dtype_channel_first_missing_keys(tmp_path):
    path = write(tmp_path / "o.nii.gz", np.ones((3, 4, 5), np.int16), np.eye(4))
    d = LoadImaged(
        ["image", "label"], dtype=torch.float32, ensure_channel_first=True, allow_missing_keys=True
    )({"image": path})
    assert d["image"].shape == (1, 3, 4, 5) and d["image"].dtype == torch.float32
    assert "label" not in d
    with pytest.raises(KeyError, match="label"):
        LoadImaged(["image", "label"])({"image": path})
    with pytest.raises(ValueError, match="reader"):
        LoadImaged("image", reader="ITKReader")


def test_file_order_view_is_x_fastest(tmp_path):
    """The tensor views the decoded buffer in NIfTI order (x fastest): no transpose copy at load."""
    path = write(tmp_path / "f.nii.gz", np.zeros((8, 6, 4), np.int16), np.eye(4))
    img = LoadImaged("image")({"image": path})["image"]
    assert img.stride() == (1, 8, 48)


@pytest.mark.parametrize(
    ("dtype", "want"), [(np.float32, torch.float32), ("float32", torch.float32), (np.int32, torch.int32)]
)
def test_numpy_dtype_as_monai_takes_it(tmp_path, dtype, want):
    """MONAI's LoadImaged takes numpy dtypes (its default is ``np.float32``); they failed at the first
    item inside ``Tensor.to`` with torch's argument error."""
    path = write(tmp_path / "n.nii.gz", np.ones((3, 4, 5), np.int16), np.eye(4))
    assert LoadImaged("image", dtype=dtype)({"image": path})["image"].dtype == want
    with pytest.raises(TypeError, match="LoadImaged: dtype='nonsense'"):
        LoadImaged("image", dtype="nonsense")


def test_home_relative_path_is_expanded_and_a_list_of_files_named(tmp_path, monkeypatch):
    """MONAI's LoadImaged expands ``~`` (and the persistent cache keys on the expanded file); fastpipe's
    said "no such file". A list of files (MONAI stacks them) is a TypeError naming the key."""
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write(tmp_path / "h.nii.gz", np.ones((3, 4, 5), np.int16), np.eye(4))
    d = LoadImaged("image")({"image": "~/h.nii.gz"})
    assert d["image"].shape == (3, 4, 5)
    assert d["image_meta_dict"]["filename_or_obj"] == path
    with pytest.raises(TypeError, match=r"data\['image'\] holds 2 files"):
        LoadImaged("image")({"image": [path, path]})


@pytest.mark.parametrize("shape", [(5, 6, 7, 1), (5, 6, 7, 1, 1)], ids=["4d", "5d"])
def test_affine_rectified_exactly_as_monai(tmp_path, shape):
    """MONAI rectifies a header whose sform disagrees with pixdim only for dim[0] <= 4, counting dim[0]
    columns (a 4D file's 4th column holds the origin, so it is left alone too): fastpipe used the
    qform for 4D/5D files, another affine than MONAI's, so other resampled voxels."""
    from monai.data.utils import correct_nifti_header_if_necessary

    qform = np.diag([0.8, 0.9, 2.5, 1.0])
    qform[:3, 3] = [10.0, -20.0, 30.0]
    img = nib.Nifti1Image(np.zeros(shape, np.int16), None)
    img.header.set_zooms((0.8, 0.9, 2.5) + (1.0,) * (len(shape) - 3))
    img.header.set_qform(qform, code=1)
    img.header.set_sform(np.diag([1.6, 0.9, 2.5, 1.0]), code=2)  # disagrees with pixdim
    path = str(tmp_path / "r.nii")
    nib.save(img, path)
    want = correct_nifti_header_if_necessary(nib.load(path)).affine
    assert want[0, 0] == pytest.approx(1.6)  # MONAI keeps the sform
    np.testing.assert_allclose(read_nifti(path).affine, want, atol=1e-6)


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.uint64, np.float32, np.float64]
)
@pytest.mark.parametrize("scaling", [None, (0.1, 0.3)])
def test_dtype_none_and_float64_give_monais_dtype_and_values(tmp_path, dtype, scaling):
    """``dtype=None`` is MONAI's: nibabel's float64 for a scaled volume (fastpipe gave float32, other
    values), ``int32``/``int64`` for uint16/uint32/uint64 (fastpipe kept them); ``dtype=float64`` of a
    scaled volume was float64 of the float32 values. The default (compact) rule is unchanged."""
    from monai.transforms import LoadImaged as MonaiLoadImaged

    raw = np.random.default_rng(2).integers(0, 120, (7, 6, 5)).astype(dtype)
    img = nib.Nifti1Image(raw, np.eye(4), dtype=raw.dtype)  # uint64 needs the dtype said
    if scaling is not None:
        img.header["scl_slope"], img.header["scl_inter"] = scaling
    path = str(tmp_path / "d.nii.gz")
    nib.save(img, path)
    for asked in (None, np.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = MonaiLoadImaged("image", dtype=asked)({"image": path})["image"].as_tensor()
        got = LoadImaged("image", dtype=asked)({"image": path})["image"]
        assert got.dtype == want.dtype, asked
        assert torch.equal(got, want), asked
    compact = LoadImaged("image")({"image": path})["image"]
    assert compact.dtype == (torch.float32 if scaling else torch.from_numpy(raw).dtype)


@pytest.mark.parametrize(
    ("klass", "shape"),
    [(nib.Nifti1Image, (6, 5, 4)), (nib.Nifti2Image, (6, 5, 4)), (nib.Nifti1Image, (6, 5, 4, 1))],
)
@pytest.mark.parametrize("codes", [(2, 1), (0, 1), (2, 0), (0, 0)])
def test_pixdim_is_monais_header_array(tmp_path, klass, shape, codes):
    """``meta["pixdim"]`` is MONAI's 8 header values (``pixdim[1:4]``: the voxel sizes); fastpipe gave
    a 3-tuple, so ``pixdim[1:4]`` read (y, z) and lost x. A ``dim[0]`` = 4 file gets the voxel sizes
    MONAI's reader rectifies into its header (the origin's column norm in ``pixdim[4]``)."""
    from monai.transforms import LoadImage

    aff = affine((0.7, 0.8, 2.5), "LPS", angle_deg=10)
    img = klass(np.zeros(shape, np.int16), aff)
    img.header["pixdim"][4:] = [2.5, 7.0, 8.0, 9.0]
    img.header.set_sform(aff, code=codes[0])
    img.header.set_qform(aff, code=codes[1])
    path = str(tmp_path / "p.nii.gz")
    nib.save(img, path)
    meta = LoadImaged("image")({"image": path})["image_meta_dict"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = LoadImage(reader="NibabelReader", image_only=True)(path).meta
    for k in ("pixdim", "original_pixdim"):
        assert isinstance(meta[k], np.ndarray) and meta[k].dtype == np.asarray(want[k]).dtype, k
        np.testing.assert_array_equal(meta[k], np.asarray(want[k]), err_msg=k)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64, torch.uint16])
def test_unsigned_dtype_asked_gives_monais_signed_tensor(tmp_path, dtype):
    """MONAI's tensors have no uint16/32/64: ``LoadImaged(dtype=np.uint16)`` gives int32 there (int64 for
    the others), values wrapped as numpy wraps them; fastpipe gave uint16."""
    from monai.transforms import LoadImaged as MonaiLoadImaged

    path = write(tmp_path / "u.nii.gz", np.arange(-30, 30, dtype=np.int16).reshape(3, 4, 5), np.eye(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = MonaiLoadImaged("image", dtype=dtype)({"image": path})["image"].as_tensor()
    got = LoadImaged("image", dtype=dtype)({"image": path})["image"]
    assert got.dtype == want.dtype and torch.equal(got, want)


def _header_case(tmp_path, name):
    """A file per header layout MONAI's reader handles differently (codes, scaling, byte order, NIfTI-2,
    a header its reader rectifies)."""
    aff = np.array([[-1.5, 0.1, 0, 10], [0, 1.2, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    cls = nib.Nifti2Image if name == "nifti2" else nib.Nifti1Image
    img = cls(np.arange(12 * 10 * 8, dtype=np.int16).reshape(12, 10, 8), aff)
    img.header.set_qform(aff, 1)
    img.header.set_sform(aff, 0 if name in ("qform_only", "no_codes") else 2)
    if name == "no_codes":
        img.header.set_qform(aff, 0)
    if name == "scaled":
        img.header.set_slope_inter(0.5, 3.0)
    if name == "sform_disagrees":  # MONAI's reader replaces the sform by the qform (srow_* too)
        img.header.set_zooms((1.0, 1.0, 1.0))
    if name == "big_endian":
        img = cls(img.get_fdata().astype(np.int16), None, img.header.as_byteswapped(">"))
    path = str(tmp_path / f"{name}.nii.gz")
    nib.save(img, path)
    return rewrite(path, path, **PIXDIM_CASES[name]) if name in PIXDIM_CASES else path


# pixdim[1..3] zero or negative: nibabel's loader makes them 1 / absolute, then MONAI's reader rectifies
# the affine as for any header (fastpipe refused these files, which MONAI reads)
PIXDIM_CASES = {
    "negative_pixdim": {"pixdim": {2: -1.2}},
    "zero_pixdim": {"pixdim": {1: 0.0}},
    "negative_pixdim_qform_only": {"sform_code": 0, "pixdim": {1: -1.5, 3: -2.5}},
    "zero_pixdim_qform_only": {"sform_code": 0, "pixdim": {3: 0.0}},
    "negative_pixdim_no_codes": {"sform_code": 0, "qform_code": 0, "pixdim": {2: -1.2}},
    "zero_pixdim_no_codes": {"sform_code": 0, "qform_code": 0, "pixdim": {1: 0.0, 2: 0.0, 3: 0.0}},
}


@pytest.mark.parametrize(
    "name",
    ["codes", "qform_only", "no_codes", "scaled", "big_endian", "nifti2", "sform_disagrees", *PIXDIM_CASES],
)
def test_metadata_keys_and_values_are_monais(tmp_path, name):
    """MONAI's LoadImaged puts the NIfTI header's fields in the metadata (``dim``, ``srow_x``,
    ``qform_code``, ``sform_code``, ...); fastpipe's dict lacked them, so a MONAI user's code reading
    them raised KeyError. Key by key, value and dtype, against MONAI (and after Orientationd/Spacingd,
    which leave them at the loaded values in both)."""
    from monai.transforms import LoadImaged as MonaiLoadImaged

    from fastpipe.transforms import EnsureChannelFirstd, Orientationd, Spacingd

    path = _header_case(tmp_path, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = dict(MonaiLoadImaged("image", image_only=False)({"image": path})["image_meta_dict"])
    d = LoadImaged("image")({"image": path})
    got = d["image_meta_dict"]
    assert sorted(got) == sorted(want)
    for key in sorted(want):
        w, g = want[key], got[key]
        if key in ("affine", "original_affine", "spatial_shape"):  # fastpipe's types: tensor, tuple
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=key)
        elif key in ("filename_or_obj", "space", "as_closest_canonical", "original_channel_dim"):
            assert str(g) == str(w), key
        else:
            assert isinstance(g, np.ndarray) and g.dtype == w.dtype and g.shape == w.shape, key
            np.testing.assert_array_equal(g, w, err_msg=key)
    loaded = {k: np.array(v) for k, v in got.items() if isinstance(v, np.ndarray) and k != "pixdim"}
    chain = [EnsureChannelFirstd("image"), Orientationd("image", "RAS"), Spacingd("image", (2.0, 1.0, 1.7))]
    for t in chain:
        d = t(d)
    for key, v in loaded.items():
        np.testing.assert_array_equal(d["image_meta_dict"][key], v, err_msg=key)


@pytest.mark.parametrize(
    ("file_dtype", "value", "dtype"),
    [(np.float32, 1e5, torch.float16), (np.float64, 1e300, torch.float32), (np.int32, 70000, torch.float16)],
)
def test_a_dtype_that_overflows_finite_voxels_to_inf_is_refused(tmp_path, file_dtype, value, dtype):
    """check_nan refused inf in the file but not inf made by the conversion: LoadImaged(dtype=float16) on
    a float32 volume of 1e5 returned all-inf voxels in silence."""
    data = np.full((4, 3, 2), value, file_dtype)
    data[0, 0, 0] = 1
    path = write(tmp_path / "big.nii", data, np.eye(4))
    with pytest.raises(ValueError, match=rf"big.nii: 23 of 24 voxels overflow to ±inf as {dtype}"):
        LoadImaged("image", dtype=dtype)({"image": path})
    out = LoadImaged("image", dtype=dtype, check_nan=False)({"image": path})["image"]
    assert torch.isinf(out).sum() == 23  # MONAI's values, asked for
    wide = {torch.float16: torch.float32, torch.float32: torch.float64}[dtype]
    np.testing.assert_array_equal(LoadImaged("image", dtype=wide)({"image": path})["image"].numpy(), data)
