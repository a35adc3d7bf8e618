"""synthesize: MSD layout, MSD-like volumes and affines, determinism, and the spleen-small size contract."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fastpipe.datasets import load_decathlon_datalist, synthesize
from fastpipe.datasets._phantom import PRESETS, spleen_mask
from fastpipe.datasets.synth import volume_params


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("tiny"), "spleen-tiny", seed=3, progress=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("small"), "spleen-small", seed=0, progress=False)


def _load(path) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img


def test_msd_layout_and_dataset_json(tiny: Path):
    assert sorted(p.name for p in tiny.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]
    assert list((tiny / "imagesTs").iterdir()) == []
    meta = json.loads((tiny / "dataset.json").read_text())
    assert meta["name"] == "Spleen" and meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "spleen"} and meta["tensorImageSize"] == "3D"
    names = [f"spleen_{i}.nii.gz" for i in range(1, 5)]
    assert meta["numTraining"] == 4 and meta["numTest"] == 0 and meta["test"] == []
    assert meta["training"] == [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names]
    assert sorted(p.name for p in (tiny / "imagesTr").iterdir()) == sorted(names)
    assert sorted(p.name for p in (tiny / "labelsTr").iterdir()) == sorted(names)
    data = load_decathlon_datalist(tiny)
    assert [Path(d["image"]).name for d in data] == names and all(Path(d["label"]).is_file() for d in data)


def test_volumes_are_ct_like_with_msd_affines(tiny: Path):
    p = PRESETS["spleen-tiny"]
    for item in load_decathlon_datalist(tiny):
        image, img = _load(item["image"])
        label, lab = _load(item["label"])
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert image.shape == label.shape and image.ndim == 3
        assert image.shape[:2] == (p.shape_xy, p.shape_xy) and p.z_range[0] <= image.shape[2] <= p.z_range[1]
        np.testing.assert_array_equal(img.affine, lab.affine)
        sx, sy, sz = np.diag(img.affine)[:3]
        assert sx < 0 and sy < 0 and sz > 0, "MSD-like stored affine: diag(-sx, -sy, sz)"
        assert p.spacing_xy[0] <= -sx <= p.spacing_xy[1] and -sx == pytest.approx(-sy) and sz in p.slice_mm
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        assert image[0, 0, 0] < -900 and image.min() >= -1024  # air in the corner
        assert (image > 500).any(), "no bone"
        assert set(np.unique(label)) == {0, 1}
        spleen = image[label == 1]
        assert 35 < spleen.mean() < 65 and (spleen > -57).mean() > 0.99


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]


def test_spleen_is_left_posterior(tiny: Path):
    """Checked in world (RAS) coordinates through the affine: +x is the patient's right, +y anterior."""
    for item in load_decathlon_datalist(tiny):
        image, img = _load(item["image"])
        label, _ = _load(item["label"])

        spleen, body = _world_centroid(label > 0, img.affine), _world_centroid(image > -500, img.affine)
        assert spleen[0] < body[0] - 10, "spleen not on the patient's left"
        assert spleen[1] < body[1], "spleen not posterior"


def test_same_seed_same_bytes_other_seed_differs(tiny: Path, tmp_path: Path):
    again = synthesize(tmp_path / "a", "spleen-tiny", seed=3, progress=False, num_volumes=2)
    for sub in ("imagesTr", "labelsTr"):
        for n in ("spleen_1.nii.gz", "spleen_2.nii.gz"):
            assert (again / sub / n).read_bytes() == (tiny / sub / n).read_bytes(), f"{sub}/{n}"
    other = synthesize(tmp_path / "b", "spleen-tiny", seed=4, progress=False, num_volumes=1)
    assert (other / "imagesTr/spleen_1.nii.gz").read_bytes() != (
        tiny / "imagesTr/spleen_1.nii.gz"
    ).read_bytes()


def test_full_preset_parameters_match_task09():
    """All 41 spleen-full volumes (parameters only): 512x512x31..168, Task09's spacings, a 100-300 cm3 spleen."""
    shapes = []
    for i in range(PRESETS["spleen-full"].num_volumes):
        v = volume_params("spleen-full", seed=0, index=i)
        sx, sy, sz = v.spacing
        assert v.shape[:2] == (512, 512) and 31 <= v.shape[2] <= 168
        assert 0.6 <= sx <= 0.98 and sx == sy and 1.5 <= sz <= 8.0
        shapes.append(v.shape[2])
        coarse = dataclasses.replace(
            v,
            spacing=(2.0, 2.0, 2.0),
            shape=tuple(math.ceil(n * s / 2.0) for n, s in zip(v.shape, v.spacing, strict=True)),
        )
        _, mask = spleen_mask(coarse)
        cm3 = mask.sum() * 8.0 / 1000
        assert 100 <= cm3 <= 300, f"volume {i}: spleen {cm3:.0f} cm3"
    assert max(shapes) - min(shapes) > 60, "slice counts should spread over Task09's range"


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown synth preset 'spleen-huge'"):
        synthesize("/nonexistent", "spleen-huge")
    with pytest.raises(ValueError, match="num_volumes must be >= 1"):
        synthesize("/nonexistent", "spleen-tiny", num_volumes=0)


def test_a_bad_seed_is_refused_before_an_earlier_run_s_dataset_json_goes(tmp_path: Path):
    """seed=1.5 passed the check, dataset.json was removed, then numpy refused the seed: the folder was
    left without its dataset.json."""
    root = synthesize(tmp_path, "spleen-tiny", progress=False, num_volumes=1)
    with pytest.raises(TypeError, match=r"seed must be an int >= 0, got 1.5"):
        synthesize(root, "spleen-tiny", seed=1.5, progress=False, num_volumes=1)
    assert (root / "dataset.json").is_file()


@pytest.mark.slow
def test_small_survives_the_spleen_chain_as_96_cubes(small: Path):
    """After Spacingd(1.5, 1.5, 2.0) and CropForegroundd (image > -57 HU) every axis keeps >= 96 voxels."""

    chain = _tutorial_prefix()
    data = load_decathlon_datalist(small)
    assert len(data) == 8
    for item in data:
        out = chain(item)
        shape = tuple(out["image"].shape[1:])
        assert min(shape) >= 96, f"{item['image']}: {shape} after the chain"
        assert out["label"].sum() > 0


def test_small_preset_extents_leave_room_for_96_cubes_for_many_seeds():
    """The analytic side of the chain test: the soft-tissue ellipse (> -57 HU) and z length, in 1.5/1.5/2.0 voxels."""
    for seed in range(50):
        for i in range(PRESETS["spleen-small"].num_volumes):
            v = volume_params("spleen-small", seed=seed, index=i)
            fov = v.shape[0] * v.spacing[0]
            width = min(2 * v.inner_semi[0], fov) / 1.5
            depth = min(2 * v.inner_semi[1], fov) / 1.5
            assert min(width, depth, v.shape[2] * v.spacing[2] / 2.0) >= 100, f"seed {seed} volume {i}: {v}"


@pytest.mark.timeout(60)
def test_writer_thread_error_reaches_the_caller(tmp_path: Path, monkeypatch):
    import fastpipe.datasets.synth as synth_module

    def broken(path, *args, **kwargs):
        raise OSError(f"disk full while writing {path}")

    monkeypatch.setattr(synth_module, "write_nifti_gz", broken)
    with pytest.raises(OSError, match="disk full while writing .*spleen_1.nii.gz"):
        synthesize(tmp_path, "spleen-tiny", num_volumes=3, progress=False)
    assert not (tmp_path / "dataset.json").exists()


def _prefix_shape(v) -> tuple[int, int, int]:
    """Voxels per axis after the tutorial prefix, from the header alone.

    Spacingd's output grid is MONAI's own ``compute_shape_offset`` of the stored affine resampled to
    (1.5, 1.5, 2.0) mm (Orientationd to RAS only flips axes); CropForegroundd keeps the soft-tissue
    body (the inner body ellipse, > -57 HU) in plane and every slice along z.
    """
    from monai.data.utils import compute_shape_offset

    ras = np.diag([1.5, 1.5, 2.0, 1.0])
    aff = np.diag([abs(s) for s in v.spacing] + [1.0])
    grid, _ = compute_shape_offset(v.shape, aff, ras)
    fov = np.array(v.shape[:2]) * np.array(v.spacing[:2])
    body = [min(2 * semi, f) / 1.5 for semi, f in zip(v.inner_semi, fov, strict=True)]
    return int(min(grid[0], body[0])), int(min(grid[1], body[1])), int(grid[2])


def test_full_preset_keeps_96_voxels_per_axis_after_the_prefix():
    """Every spleen-full volume (seeds 0-9, parameters only) is a 96^3 crop's size or more after the prefix."""
    for seed in range(10):
        for i in range(PRESETS["spleen-full"].num_volumes):
            v = volume_params("spleen-full", seed=seed, index=i)
            shape = _prefix_shape(v)
            assert min(shape) >= 96 + 8, f"seed {seed} volume {i}: {v.shape} at {v.spacing} -> {shape}"


def test_full_preset_size_distribution_matches_task09_fingerprint():
    """docs/spleen-data.md: 41 CTs, 512x512x31..168, slices 1.5-8 mm mostly 5 mm, median ~90 slices (~450 mm)."""
    vs = [volume_params("spleen-full", seed=0, index=i) for i in range(41)]
    slices = np.array([v.shape[2] for v in vs])
    thick = np.array([v.spacing[2] for v in vs])
    assert len(vs) == 41 and all(v.shape[:2] == (512, 512) for v in vs)
    assert slices.min() >= 31 and slices.max() <= 168 and slices.max() - slices.min() > 100
    assert 80 <= np.median(slices) <= 100, np.median(slices)
    assert np.median(thick) == 5.0 and thick.min() >= 1.5 and thick.max() <= 8.0
    assert len(set(thick.tolist())) >= 4, "thick and thin slices both present"
    assert 380 <= np.median(slices * thick) <= 500


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_full_preset_tightest_volume_survives_monai_prefix(tmp_path: Path):
    """The spleen-full volume with the least room, rendered and run through MONAI's prefix, keeps >= 96 per axis."""

    from fastpipe.datasets._phantom import render
    from fastpipe.datasets.synth import write_nifti_gz

    index = min(range(41), key=lambda i: min(_prefix_shape(volume_params("spleen-full", 0, i))))
    v = volume_params("spleen-full", seed=0, index=index)
    image, label = render(v, np.random.default_rng([0, index]))
    write_nifti_gz(tmp_path / "img.nii.gz", image, v.affine(), v.spacing)
    write_nifti_gz(tmp_path / "lab.nii.gz", label, v.affine(), v.spacing)
    chain = _tutorial_prefix()
    out = chain({"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")})
    shape = tuple(out["image"].shape[1:])
    assert min(shape) >= 96, f"volume {index}: {shape}"
    assert abs(min(shape) - min(_prefix_shape(v))) <= 3, (shape, _prefix_shape(v))
    assert out["label"].sum() > 0


def _tutorial_prefix():
    """MONAI's spleen tutorial prefix up to CropForegroundd (the shapes the 96^3 crop must fit in)."""
    from monai import transforms as mt

    keys = ["image", "label"]
    return mt.Compose([
        mt.LoadImaged(keys, image_only=True), mt.EnsureChannelFirstd(keys), mt.Orientationd(keys, axcodes="RAS"),
        mt.Spacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
        mt.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        mt.CropForegroundd(keys, source_key="image", allow_smaller=True),
    ])  # fmt: skip


def test_a_run_stopped_half_way_leaves_no_dataset_json_and_no_half_file(tmp_path, monkeypatch):
    import fastpipe.datasets.synth as synth

    synthesize(tmp_path, "spleen-tiny", seed=0, progress=False, num_volumes=3)
    real, written = synth.write_nifti_gz, []

    def stop_on_the_third(path, *args):
        if len(written) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C in the middle of a file
        real(path, *args)
        written.append(path)

    monkeypatch.setattr(synth, "write_nifti_gz", stop_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path, "spleen-tiny", seed=1, progress=False, num_volumes=3)
    assert not (tmp_path / "dataset.json").exists()  # no json describing a mix of two runs
    assert not list(tmp_path.rglob("*.tmp"))
    for f in tmp_path.rglob("*.nii.gz"):
        nib.load(f).get_fdata()  # every file whole, old or new


def test_a_file_is_renamed_into_place_only_once_whole(tmp_path, monkeypatch):
    import isal.igzip

    import fastpipe.datasets.synth as synth

    class Failing(isal.igzip.IGzipFile):
        def write(self, data):
            raise OSError("disk full")

    monkeypatch.setattr(isal.igzip, "IGzipFile", Failing)
    with pytest.raises(OSError, match="disk full"):
        synth.write_nifti_gz(tmp_path / "v.nii.gz", np.zeros((2, 3, 4), np.int16), np.eye(4), (1, 1, 1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_same_seed_same_bytes_from_another_process(tiny: Path, tmp_path: Path):
    """The gzip header named the temporary file, which holds the writer's pid: every run differed."""
    import subprocess
    import sys

    out = tmp_path / "again"
    cmd = [sys.executable, "-m", "fastpipe", "synth", "--out", str(out), "--preset", "spleen-tiny"]
    subprocess.run([*cmd, "--seed", "3", "--num", "1", "--no-progress"], check=True, timeout=120)
    for sub in ("imagesTr", "labelsTr"):
        assert (out / sub / "spleen_1.nii.gz").read_bytes() == (
            tiny / sub / "spleen_1.nii.gz"
        ).read_bytes(), sub


@pytest.mark.parametrize("dtype", [">i2", "<i2", ">f4", "<f8", "u1"])
def test_write_nifti_gz_keeps_values_of_any_byte_order(tmp_path: Path, dtype: str):
    from fastpipe.datasets.synth import write_nifti_gz

    zyx = np.arange(60).reshape(3, 4, 5).astype(dtype)
    write_nifti_gz(tmp_path / "a.nii.gz", zyx, np.eye(4), (1.0, 1.0, 1.0))
    back = np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(back, zyx)  # a big-endian array used to come back byte-swapped


def test_a_real_dataset_folder_is_refused_not_overwritten(tmp_path: Path):
    root = tmp_path / "Task09_Spleen"
    (root / "imagesTr").mkdir(parents=True)
    (root / "imagesTr" / "spleen_2.nii.gz").write_bytes(b"a real volume")
    real_json = json.dumps({"name": "Spleen", "description": "Spleen Segmentation", "training": []})
    (root / "dataset.json").write_text(real_json)
    with pytest.raises(FileExistsError, match="was not written by fastpipe synth"):
        synthesize(root, "spleen-tiny", progress=False)
    assert (root / "imagesTr" / "spleen_2.nii.gz").read_bytes() == b"a real volume"  # was overwritten
    assert (root / "dataset.json").read_text() == real_json
    # a folder that synth wrote is rewritten as before
    again = synthesize(tmp_path / "synth", "spleen-tiny", progress=False, num_volumes=1)
    assert synthesize(again, "spleen-tiny", progress=False, num_volumes=2) == again
