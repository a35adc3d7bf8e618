"""EnsureChannelFirstd, Orientationd, Spacingd: semantics, fast path vs grid_sample path, devices."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Spacing as MonaiSpacing

from fastpipe.transforms import EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd
from fastpipe.transforms._affine import is_separable, spacing_geometry
from fastpipe.transforms._resample import resample_grid, resample_separable

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_files import affine, phantom, write  # noqa: E402


def item(img: torch.Tensor, aff: np.ndarray, key: str = "image") -> dict:
    return {key: img, f"{key}_meta_dict": {"affine": torch.as_tensor(aff, dtype=torch.float64)}}


def test_ensure_channel_first():
    d = EnsureChannelFirstd(["a", "b"])({"a": torch.zeros(4, 5, 6), "b": torch.zeros(2, 4, 5, 6)})
    assert d["a"].shape == (1, 4, 5, 6) and d["b"].shape == (2, 4, 5, 6)
    d = EnsureChannelFirstd("a", channel_dim=-1)({"a": torch.zeros(4, 5, 6, 3)})
    assert d["a"].shape == (3, 4, 5, 6)


@pytest.mark.parametrize(("dtype", "want"), [(np.float32, torch.float32), ("float64", torch.float64)])
def test_spacing_takes_monais_numpy_dtype(dtype, want):
    """``Spacingd(..., dtype=np.float32)``, MONAI's spelling, crashed at the first item with torch's
    "empty(): argument 'dtype' must be torch.dtype, not type". The output is float32 either way, as
    MONAI's (``dtype`` is the resampling's precision)."""
    d = item(torch.rand(1, 6, 5, 4), np.diag([1.0, 1.0, 2.0, 1.0]))
    ours = Spacingd("image", pixdim=(1.5, 1.5, 1.0), dtype=dtype)(d)["image"]
    ref = Spacingd("image", pixdim=(1.5, 1.5, 1.0), dtype=want)(d)["image"]
    assert ours.dtype == torch.float32 and torch.equal(ours, ref)


def test_spacing_names_a_bad_dtype():
    with pytest.raises(TypeError, match=r"Spacingd: dtype='nonsense' is no torch or numpy dtype"):
        Spacingd("image", pixdim=1.0, dtype="nonsense")


def test_spacing_names_an_empty_volume():
    """After an empty crop, Spacingd raised a bare ZeroDivisionError from the resample."""
    with pytest.raises(ValueError, match=r"Spacingd: 'image' has the empty spatial shape \(0, 5, 5\)"):
        Spacingd("image", pixdim=1.5)(item(torch.zeros(1, 0, 5, 5), np.eye(4)))


@pytest.mark.parametrize("channel_dim", [-1, 3, 0])
def test_ensure_channel_first_counts_the_files_singleton_axis(tmp_path, channel_dim):
    """An ``(X, Y, Z, 1)`` file is read as ``(X, Y, Z)``; ``channel_dim=-1`` moved ``Z`` to the channel
    (``(Z, X, Y)``: Orientationd then failed on a 3-D shape) and ``3`` raised an IndexError, where MONAI
    moves the file's singleton axis: ``(1, X, Y, Z)``."""
    import monai.transforms as M

    data = phantom((12, 10, 6))[0]
    path = write(tmp_path / "c.nii.gz", data[..., None], affine((0.9, 1.1, 2.0), "LPS"))
    ours = EnsureChannelFirstd("image", channel_dim=channel_dim)(LoadImaged("image")({"image": path}))
    theirs = M.EnsureChannelFirstd("image", channel_dim=channel_dim)(M.LoadImaged("image")({"image": path}))
    assert tuple(ours["image"].shape) == tuple(theirs["image"].shape)
    np.testing.assert_array_equal(ours["image"].numpy(), theirs["image"].numpy())


def test_ensure_channel_first_names_a_missing_axis():
    with pytest.raises(ValueError, match=r"channel_dim=3 is no axis of 'a', shape \(4, 5, 6\)"):
        EnsureChannelFirstd("a", channel_dim=3)({"a": torch.zeros(4, 5, 6)})


@pytest.mark.parametrize("codes", ["LPS", "RAS", "LAI", "ASL"])
def test_orientation_matches_nibabel_canonical(tmp_path, codes):
    aff = affine((0.9, 1.1, 2.0), codes[:3] if codes != "ASL" else "RAS")
    if codes == "ASL":  # axes stored in a permuted order
        aff[:3, :3] = aff[:3, [1, 2, 0]] * np.array([1, 1, -1])
    data = phantom((20, 16, 12))[0]
    path = write(tmp_path / "o.nii.gz", data, aff)
    d = Orientationd("image", axcodes="RAS")(
        EnsureChannelFirstd("image")(LoadImaged("image")({"image": path}))
    )
    canon = nib.as_closest_canonical(nib.load(path))
    np.testing.assert_array_equal(d["image"][0].numpy(), np.asanyarray(canon.dataobj))
    np.testing.assert_allclose(d["image_meta_dict"]["affine"].numpy(), canon.affine, atol=1e-6)
    assert nib.aff2axcodes(d["image_meta_dict"]["affine"].numpy()) == ("R", "A", "S")


@pytest.mark.parametrize("codes", ["SIL", "RRS", "RASX", "RA", "XYZ", "ras"])
def test_orientation_rejects_axcodes_naming_an_axis_twice(codes):
    # nibabel (and MONAI) turn "SIL" (S and I: one axis twice) into a singular affine without a word
    with pytest.raises(ValueError, match=f"axcodes='{codes}'.*each world axis once"):
        Orientationd("image", axcodes=codes)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PLI", "SPL", "IRA"])
def test_orientation_accepts_every_axis_once(codes):
    d = Orientationd("image", axcodes=codes)(item(torch.rand(1, 4, 5, 6), np.diag([1.0, 2.0, 3.0, 1.0])))
    assert nib.aff2axcodes(d["image_meta_dict"]["affine"].numpy()) == tuple(codes)


def test_spacing_nonzero_voxels_and_foreground_crop_as_monai():
    """Output coordinates 2e-16 off a voxel give float32 weights (2e-16, 1.0): MONAI's float64 sum keeps
    ``a * 2e-16``, a tiny nonzero; fastpipe's ``a + (b - a) * 1.0`` gave exactly 0 there, so a foreground
    crop (``x > 0``) after it came out (1, 4, 3, 3) where MONAI's is (1, 4, 4, 3)."""
    from monai.transforms import CropForegroundd as MonaiCrop
    from monai.transforms import Spacingd as MonaiSpacingd

    from fastpipe.transforms import CropForegroundd

    aff = np.diag([-0.5, -0.5, -0.5, 1.0])
    img = torch.zeros(1, 7, 7, 7)
    img[0, 2:5, 2:5, 2:5] = 100.0
    ours = Spacingd("image", pixdim=(0.5, 0.5, 0.7))(item(img, aff))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = MonaiSpacingd("image", pixdim=(0.5, 0.5, 0.7))(
            {"image": MetaTensor(img, affine=torch.tensor(aff))}
        )
        crop_theirs = MonaiCrop("image", source_key="image", allow_smaller=True)(theirs)["image"]
    ref = theirs["image"].as_tensor()
    assert torch.equal(ours["image"] != 0, ref != 0), "nonzero voxels differ from MONAI's"
    torch.testing.assert_close(ours["image"], ref, atol=1e-5, rtol=1e-6)
    crop_ours = CropForegroundd("image", source_key="image")(ours)["image"]
    assert crop_ours.shape == crop_theirs.shape == (1, 4, 4, 3)


@pytest.mark.parametrize(("spacing", "target"), [(1.0, 1.5), (0.8, 1.0)])
def test_nearest_ties_on_an_oblique_affine_pick_monais_voxel(spacing, target):
    """1.0 -> 1.5 mm puts every other output halfway between two voxels; on an oblique affine MONAI's
    grid carries ~1e-17 off-diagonal terms that decide each tie, voxel by voxel. The separable path
    dropped them: 0.5-2.5% of the label voxels took the other neighbour."""
    from monai.transforms import Orientationd as MonaiOrientationd
    from monai.transforms import Spacingd as MonaiSpacingd

    from fastpipe.transforms import Compose

    c, s = np.cos(0.2), np.sin(0.2)
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ aff[:3, :3]
    aff[:3, 3] = (3.1, -7.0, 11.0)
    lab = torch.from_numpy(np.random.default_rng(0).integers(0, 4, (1, 40, 36, 30)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = MonaiSpacingd("l", pixdim=target, mode="nearest")(
            MonaiOrientationd("l", axcodes="LPS")({"l": MetaTensor(lab, affine=torch.tensor(aff))})
        )["l"].as_tensor()
    chain = [Orientationd("l", axcodes="LPS"), Spacingd("l", pixdim=target, mode="nearest")]
    step = chain[1](chain[0](item(lab, aff, "l")))["l"]
    fused = Compose(chain)(item(lab, aff, "l"))["l"]
    assert torch.equal(step, theirs), f"{(step != theirs).float().mean().item():.2%} of the voxels differ"
    assert torch.equal(fused, theirs)


def test_transforms_do_not_mutate_input_meta():
    src = item(torch.rand(1, 10, 10, 10), np.diag([-1.0, -1.0, 1.0, 1.0]))
    before = src["image_meta_dict"]["affine"].clone()
    out = Spacingd("image", pixdim=2.0)(Orientationd("image")(src))
    assert torch.equal(src["image_meta_dict"]["affine"], before)
    assert out["image"].shape == (1, 6, 6, 6)  # MONAI: round(9 mm / 2 mm + 1)


XFORMS = [  # (scale, shift) per axis of a diagonal voxel map
    ((1.875, 1.875, 0.8), (0.0, 0.0, 0.0)),
    ((0.5, 1.5, 2.0), (0.25, -0.3, 0.7)),
    ((1.0, 0.6667, 0.4), (-2.0, 1.5, 0.0)),
]


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding", ["border", "zeros"])
@pytest.mark.parametrize("xf", range(len(XFORMS)))
def test_separable_equals_grid_sample(mode, padding, xf):
    scale, shift = XFORMS[xf]
    xform = np.eye(4)
    xform[:3, :3] = np.diag(scale)
    xform[:3, 3] = shift
    img = torch.rand(2, 23, 19, 11, dtype=torch.float64) * 100
    out_shape = (14, 17, 9)
    ref = resample_grid(img, xform, out_shape, mode, padding, False, torch.float64)
    for torch_ops in (False, True):  # numpy (CPU) path and the torch-ops path CUDA takes
        fast = resample_separable(
            img, xform, out_shape, mode, padding, False, torch.float64, torch_ops=torch_ops
        )
        assert fast.shape == ref.shape == (2, *out_shape)
        torch.testing.assert_close(fast, ref, atol=1e-9, rtol=1e-9)
    if mode == "nearest":  # integer labels keep their dtype on both paths
        lab = (img > 50).to(torch.uint8)
        want = resample_grid(lab, xform, out_shape, mode, padding, False, torch.float64)
        for torch_ops in (False, True):
            got = resample_separable(
                lab, xform, out_shape, mode, padding, False, torch.float64, torch_ops=torch_ops
            )
            assert got.dtype == torch.uint8 and torch.equal(got, want)


def test_layout_and_dtype_rules():
    """Any memory layout gives the same values; nearest keeps the dtype, bilinear gives float32."""
    rng = np.random.default_rng(1)
    lab = torch.from_numpy(rng.integers(0, 3, (1, 30, 20, 10)).astype(np.uint8))
    img = torch.from_numpy(rng.integers(-500, 500, (1, 30, 20, 10)).astype(np.int16))
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    t = Spacingd(["image", "label"], pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest"))
    c = t({**item(img, aff), **item(lab, aff, "label")})
    f_img = img.numpy().copy(order="F")  # F-order, like a NIfTI-loaded volume
    f = t(
        {
            **item(torch.from_numpy(f_img), aff),
            **item(lab.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1), aff, "label"),
        }
    )
    assert c["image"].dtype == torch.float32 and c["label"].dtype == torch.uint8
    torch.testing.assert_close(c["image"], f["image"], atol=1e-3, rtol=1e-5)  # pass order differs by layout
    assert torch.equal(c["label"], f["label"])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("pixdim", [(1.5, 1.5, 2.0), (0.8, 0.8, 2.5)])
def test_nearest_float_labels_become_float32_as_monai(dtype, pixdim):
    """Only integer labels keep their dtype through ``nearest``: a float64 label (a float64 file, or a
    scaled one loaded with dtype=None) stayed float64, other values than MONAI's float32."""
    lab = (torch.rand(1, 20, 18, 10, dtype=torch.float64) * 3).to(dtype)
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    got = Spacingd("label", pixdim=pixdim, mode="nearest")(item(lab, aff, "label"))["label"]
    want = MonaiSpacing(pixdim=pixdim, mode="nearest")(MetaTensor(lab, affine=torch.as_tensor(aff)))
    assert got.dtype == want.dtype == torch.float32
    assert torch.equal(got, want.as_tensor())


def test_same_spacing_is_a_float_copy():
    img = torch.arange(1000, dtype=torch.int16).view(1, 10, 10, 10)
    d = Spacingd("image", pixdim=(1.0, 1.0, 1.0))(item(img, np.eye(4)))
    assert d["image"].dtype == torch.float32
    assert torch.equal(d["image"], img.float())


def test_spacing_within_monai_tolerance_of_the_target_is_kept_as_it_is():
    """MONAI keeps an input spacing within AFFINE_TOL (1e-3) of the target: no resampling, same affine
    (0.9995 mm over 1200 slices to 1 mm would otherwise drop a slice and shift every voxel)."""
    rng = np.random.default_rng(2)
    img = torch.from_numpy(rng.normal(size=(1, 6, 5, 1200)).astype(np.float32))
    aff = np.diag([1.0, 1.0, 0.9995, 1.0])
    ours = Spacingd("image", pixdim=(1.0, 1.0, 1.0))(item(img, aff))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MonaiSpacing(pixdim=(1.0, 1.0, 1.0))(MetaTensor(img, affine=torch.as_tensor(aff)))
    assert ours["image"].shape == ref.shape == img.shape and torch.equal(ours["image"], img)
    np.testing.assert_allclose(ours["image_meta_dict"]["affine"].numpy(), ref.affine.numpy(), atol=1e-9)
    half = Spacingd("image", pixdim=(1.0, 1.0, 1.0))(item(img, np.diag([1.0, 1.0, 0.998, 1.0])))
    assert half["image"].shape[-1] == 1198  # 2e-3 away: resampled, as MONAI does


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8])
def test_integer_volume_with_axes_at_target_spacing_matches_monai(dtype):
    """int16 CT at 1.5 mm in-plane resampled to (1.5, 1.5, 2.0): the in-plane pass only copies,
    from an integer volume into float32 (this raised numpy's 'safe' casting TypeError)."""
    rng = np.random.default_rng(4)
    img = torch.from_numpy(rng.integers(0, 250, (1, 64, 64, 12)).astype(dtype))
    img = img.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1)  # x fastest, as LoadImaged gives it
    aff = np.diag([1.5, 1.5, 5.0, 1.0])
    out = Spacingd("image", pixdim=(1.5, 1.5, 2.0), mode="bilinear")(item(img, aff))["image"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MonaiSpacing(pixdim=(1.5, 1.5, 2.0))(MetaTensor(img.float(), affine=torch.as_tensor(aff)))
    assert out.dtype == torch.float32 and out.shape == ref.shape == (1, 64, 64, 28)
    torch.testing.assert_close(out, ref.as_tensor(), atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("diagonal", [False, True])
def test_oblique_and_diagonal_match_monai(diagonal):
    aff = affine((0.9, 1.1, 2.0), "RAS", angle_deg=20)
    img = torch.from_numpy(phantom((30, 28, 12))[0].astype(np.float32))[None]
    new_aff, shape, xform = spacing_geometry(aff, tuple(img.shape[1:]), np.array([1.5, 1.5, 2.0]), diagonal)
    assert is_separable(xform, tuple(img.shape[1:])) != diagonal  # diagonal=True rotates: grid path
    ours = Spacingd("image", pixdim=(1.5, 1.5, 2.0), diagonal=diagonal)(item(img, aff))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MonaiSpacing(pixdim=(1.5, 1.5, 2.0), diagonal=diagonal)(
            MetaTensor(img, affine=torch.as_tensor(aff))
        )
    assert ours["image"].shape == ref.shape
    assert (ours["image"] - ref.as_tensor()).abs().max().item() < 1e-2
    np.testing.assert_allclose(ours["image_meta_dict"]["affine"].numpy(), ref.affine.numpy(), atol=1e-6)


def test_devices_agree(device):
    rng = np.random.default_rng(2)
    img = torch.from_numpy(rng.integers(-500, 500, (1, 31, 27, 13)).astype(np.int16))
    lab = torch.from_numpy(rng.integers(0, 2, (1, 31, 27, 13)).astype(np.uint8))
    aff = np.diag([-0.8, -0.9, 2.5, 1.0])
    chain = [
        Orientationd(["image", "label"]),
        Spacingd(["image", "label"], pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
    ]
    cpu = {**item(img, aff), **item(lab, aff, "label")}
    dev = {**item(img.to(device), aff), **item(lab.to(device), aff, "label")}
    for t in chain:
        cpu, dev = t(cpu), t(dev)
    assert dev["image"].device.type == device.type
    torch.testing.assert_close(dev["image"].cpu(), cpu["image"], atol=1e-4, rtol=1e-5)
    assert torch.equal(dev["label"].cpu(), cpu["label"])


@pytest.mark.parametrize("codes", ["LPS", "LAS", "RAS", "ASL"])
@pytest.mark.parametrize("spacing", [(0.8, 0.8, 2.5), (1.5, 1.5, 2.0), (0.7, 0.9, 5.0)])
def test_fused_orientation_spacing_is_bit_identical_to_two_steps(codes, spacing):
    from fastpipe.transforms import Compose
    from fastpipe.transforms.spatial import OrientSpacingd, fuse_spatial

    aff = affine(spacing, codes if codes != "ASL" else "RAS")
    if codes == "ASL":  # axes stored permuted: the fused transform takes its two-step path
        aff[:3, :3] = aff[:3, [1, 2, 0]] * np.array([1, 1, -1])
    img, lab = phantom((40, 36, 20))
    d = item(torch.from_numpy(img)[None], aff) | item(torch.from_numpy(lab)[None], aff, "label")
    keys = ["image", "label"]
    chain = [
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
    ]
    fused = fuse_spatial(chain)
    assert len(fused) == 1 and isinstance(fused[0], OrientSpacingd)
    two = chain[1](chain[0](dict(d)))
    one = Compose(chain)(dict(d))
    for k in keys:
        assert torch.equal(one[k], two[k]), k
        assert one[k].dtype == two[k].dtype
        torch.testing.assert_close(one[f"{k}_meta_dict"]["affine"], two[f"{k}_meta_dict"]["affine"])
    assert torch.equal(d["image"], torch.from_numpy(img)[None])  # the input is left alone


def test_fuse_spatial_only_fuses_matching_neighbours():
    from fastpipe.transforms.spatial import OrientSpacingd, fuse_spatial

    o, s = Orientationd(["image"]), Spacingd(["image"], pixdim=1.0)
    other = Spacingd(["image", "label"], pixdim=1.0)
    assert fuse_spatial([s, o]) == [s, o]
    assert fuse_spatial([o, other]) == [o, other]
    assert isinstance(fuse_spatial([o, s])[0], OrientSpacingd)


def test_two_thread_resample_equals_serial(monkeypatch):
    import fastpipe.transforms._resample as rs

    img, lab = phantom((40, 36, 20))
    aff = affine((0.8, 0.8, 2.5), "LPS")
    d = item(torch.from_numpy(img)[None], aff) | item(torch.from_numpy(lab)[None], aff, "label")
    sp = Spacingd(["image", "label"], pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest"))
    serial = sp(dict(d))
    monkeypatch.setattr(rs, "_PARALLEL_MIN_VOXELS", 0)
    monkeypatch.setattr(rs.os, "cpu_count", lambda: 2)
    threaded = sp(dict(d))
    for k in ("image", "label"):
        assert torch.equal(serial[k], threaded[k])

    def boom(c, lo, hi):
        if lo > 0:
            raise RuntimeError("upper half failed")

    with pytest.raises(RuntimeError, match="upper half failed"):
        rs._over_planes(boom, 1, 10, 1)


@pytest.mark.parametrize("ensure_same_shape", [True, False])
@pytest.mark.parametrize("fused", [False, True])
def test_spacing_gives_the_label_the_image_shape_as_monai(ensure_same_shape, fused):
    """MONAI's ``ensure_same_shape``: a label whose affine differs from the image's within 1e-3 (which
    fastpipe's same-grid check lets through) gets the image's output shape; fastpipe resampled each key
    on its own and the label came out one voxel off (here 11 vs 12), breaking the pair downstream."""
    import monai.transforms as M

    from fastpipe.transforms import Compose

    shape, aff = (22, 31, 39), np.diag([0.9765625, 0.7, 3.0, 1.0])
    aff[:3, 3] = (10.0, -4.0, 7.0)
    lab_aff = aff.copy()
    lab_aff[:3, :3] += np.diag([-4e-4, -8e-4, 3e-4])
    gen = torch.Generator().manual_seed(0)
    img, lab = torch.rand(1, *shape, generator=gen), (torch.rand(1, *shape, generator=gen) > 0.5).float()
    kw = dict(pixdim=(1.5, 2.0, 1.5), mode=("bilinear", "nearest"), ensure_same_shape=ensure_same_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = M.Spacingd(["image", "label"], **kw)(
            {
                "image": MetaTensor(img, affine=torch.as_tensor(aff)),
                "label": MetaTensor(lab, affine=torch.as_tensor(lab_aff)),
            }
        )
    steps = [Spacingd(["image", "label"], **kw)]
    if fused:  # Orientationd + Spacingd run fused (OrientSpacingd); RAS already, so MONAI's needs none
        steps.insert(0, Orientationd(["image", "label"], axcodes="RAS"))
    d = {"image": img, "label": lab, "image_meta_dict": {"affine": torch.as_tensor(aff)}}
    d["label_meta_dict"] = {"affine": torch.as_tensor(lab_aff)}
    out = Compose(steps)(d)
    assert (tuple(ref["label"].shape) == tuple(ref["image"].shape)) is ensure_same_shape
    for key in ("image", "label"):
        assert tuple(out[key].shape) == tuple(ref[key].shape), key
        torch.testing.assert_close(out[key].float(), ref[key].as_tensor().float(), atol=1e-5, rtol=0)
    from fastpipe.transforms._translate import Context, translate

    translated, reason = translate(M.Spacingd(["image", "label"], **kw), Context())
    assert reason == "" and translated.ensure_same_shape is ensure_same_shape  # MONAI's value kept


def test_orientation_and_crop_take_bfloat16_as_monai():
    """numpy has no bfloat16: Orientationd's flip and CropForegroundd's box and copy went through numpy on
    the CPU and raised ``TypeError: Got unsupported ScalarType BFloat16`` where MONAI's work."""
    import monai.transforms as M

    from fastpipe.transforms import CropForegroundd

    img = torch.zeros(1, 5, 6, 7, dtype=torch.bfloat16)
    img[0, 1:3, 2:4, 3:5] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_o = M.Orientationd("image", axcodes="LPS")({"image": MetaTensor(img)})["image"].as_tensor()
        ref_c = M.CropForegroundd("image", source_key="image", margin=1)({"image": img})["image"].as_tensor()
    got_o = Orientationd("image", axcodes="LPS")(item(img, np.eye(4)))["image"]
    got_c = CropForegroundd("image", source_key="image", margin=1)({"image": img})["image"]
    assert got_o.dtype == got_c.dtype == torch.bfloat16
    assert torch.equal(got_o, ref_o) and torch.equal(got_c, ref_c)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_spacing_takes_bfloat16_as_monai(mode):
    """The CPU resample's numpy passes raised ``TypeError: Got unsupported ScalarType BFloat16``."""
    import monai.transforms as M

    img = (
        (torch.rand(1, 9, 10, 11, generator=torch.Generator().manual_seed(0)) * 4).round().to(torch.bfloat16)
    )
    for pixdim in ((2.0, 1.0, 1.0), (0.7, 1.3, 2.1)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = M.Spacingd("image", pixdim, mode=mode)({"image": MetaTensor(img.clone())})[
                "image"
            ].as_tensor()
        got = Spacingd("image", pixdim, mode=mode)(item(img, np.eye(4)))["image"]
        assert got.dtype == ref.dtype and got.shape == ref.shape
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
