"""The corrupted NIfTI files of the fuzz test, made from small volumes generated here (seeded).

Each case is a dict the worker (``_nifti_fuzz_worker.py``) runs: ``path`` (or ``item`` for a
transform chain), and ``oracle``, what counts as a correct outcome besides a named error:

- ``"ref"``: if it loads, voxels and affine equal nibabel's decode of the clean file ``ref``;
- ``"load"``: it must load, equal to nibabel's decode of ``ref`` (positive controls);
- ``"self"``: if it loads, it equals nibabel's decode of this very file (header field flips);
- ``"error"``: it must be refused;
- ``"chain"``: the prefix chain must refuse the item with a message naming ``names``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from _nifti_corrupt import decoded, encode, flip, members, set_fields, structured_volume
from _nifti_files import affine

NAN, INF = float("nan"), float("inf")
HEADER_FLIPS: list[dict] = [
    *({"dim": {0: v}} for v in (0, -1, 2, 4, 8, 100)),
    *({"dim": {i: v}} for i in (1, 2, 3) for v in (0, -1, -5, 1, 2, 32767, -32768)),
    {"dim": {1: 32767, 2: 32767, 3: 32767}},
    {"dim": {0: 4, 4: 5}},
    *(
        {"datatype": v}
        for v in (0, 1, 2, 4, 8, 16, 32, 64, 128, 255, 256, 512, 768, 1024, 1280, 1536, 2048, 1234)
    ),
    *({"bitpix": v} for v in (0, 1, 8, 16, 32, 64, -16)),
    *(
        {"datatype": d, "bitpix": b}
        for d, b in ((2, 8), (256, 8), (512, 16), (16, 32), (8, 32), (64, 64), (1024, 64))
    ),
    *({"pixdim": {i: v}} for i in (0, 1, 2, 3) for v in (0.0, -1.0, NAN, INF, 1e-30, 1e30, 3.0)),
    *({"vox_offset": v} for v in (NAN, INF, -1.0, 0.0, 100.0, 348.0, 351.0, 352.5, 356.0, 368.0, 1e9, 1e30)),
    *({code: v} for code in ("qform_code", "sform_code") for v in (-1, 0, 1, 2, 3, 4, 5, 6, 255, 32767)),
    *({f"quatern_{c}": v} for c in "bcd" for v in (0.5, 0.9, 1.0, 1.5, -1.0, NAN, INF)),
    *({f"qoffset_{c}": v} for c in "xyz" for v in (NAN, INF, 1e30)),
    *({row: v} for row in ("srow_x", "srow_y", "srow_z") for v in ([0.0] * 4, [NAN] * 4, [INF, 0, 0, 0])),
    {"srow_y": [0.5, 0.0, 0.0, 0.0]},  # parallel to srow_x of a diagonal affine: singular
    *({"scl_slope": v} for v in (0.0, NAN, INF, -INF, 2.0, -1.0, 1e-30, 1e38)),
    *({"scl_slope": 2.0, "scl_inter": v} for v in (NAN, INF, 5.0, -1e38)),
    *({"magic": v} for v in (b"ni1\x00", b"xxxx", b"n+2\x00")),
    *({"sizeof_hdr": v} for v in (0, 347, 349, 540)),
]


def _save(path: Path, data: np.ndarray, aff: np.ndarray, klass=nib.Nifti1Image, **fields) -> str:
    img = klass(data, aff)
    for k, v in fields.items():
        img.header[k] = v
    nib.save(img, str(path))
    return str(path)


def bases(tmp: Path) -> dict[str, str]:
    """Clean files: name -> path. ``.nii`` and ``.nii.gz`` of CT/label/float/scaled/NIfTI-2 volumes."""
    out = {}
    ct = structured_volume((20, 16, 10), np.int16, seed=1)
    vols = {
        "ct": (ct, affine((0.8, 0.9, 2.5), "LPS", angle_deg=10), {}),
        "lab": (structured_volume((20, 16, 10), np.uint8, seed=2), np.diag([1.0, 1.0, 2.0, 1.0]), {}),
        "f32": (structured_volume((12, 10, 8), np.float32, seed=3), affine((1.0, 1.2, 3.0)), {}),
        "scaled": (ct[:12, :10, :8], np.eye(4), {"scl_slope": 2.0, "scl_inter": -1024.0}),
    }
    for name, (data, aff, fields) in vols.items():
        for ext in (".nii", ".nii.gz"):
            out[name + ext] = _save(tmp / f"{name}{ext}", data, aff, **fields)
    for ext in (".nii", ".nii.gz"):  # qform only, so the quaternion fields are the affine
        raw = set_fields(decoded(out[f"ct{ext}"]), sform_code=0, qform_code=1)
        out[f"ctq{ext}"] = _write(tmp / f"ctq{ext}", encode(raw, ext.endswith(".gz")))
        # a 180-degree qform rotation: quaternion w = 0, b**2 + c**2 + d**2 = 1 (an LPS qform)
        raw = set_fields(raw, quatern_b=0.0, quatern_c=0.0, quatern_d=1.0)
        out[f"ctq180{ext}"] = _write(tmp / f"ctq180{ext}", encode(raw, ext.endswith(".gz")))
        n2 = structured_volume((10, 8, 6), np.float64, seed=4)
        out[f"n2{ext}"] = _save(tmp / f"n2{ext}", n2, affine((2.0, 2.0, 2.0)), nib.Nifti2Image)
    big_endian = nib.Nifti1Image(ct, np.eye(4), header=nib.Nifti1Header(endianness=">"))
    nib.save(big_endian, str(tmp / "be.nii"))
    out["be.nii"] = str(tmp / "be.nii")
    return out


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def controls(base: dict[str, str]) -> list[dict]:
    return [{"path": p, "oracle": "load", "ref": p, "kind": "clean"} for p in base.values()]


def truncations(tmp: Path, base: dict[str, str], rng: np.random.Generator) -> list[dict]:
    cases = []
    for name in ("ct.nii.gz", "lab.nii.gz", "n2.nii.gz", "ct.nii", "f32.nii", "n2.nii", "be.nii"):
        raw = Path(base[name]).read_bytes()
        cuts = {0, 1, 2, 4, 9, 10, 11, 20, 50, 90, 91, 100, 347, 348, 351, 352, 353, len(raw) - 1}
        cuts |= {len(raw) - k for k in range(2, 9)} | set(rng.integers(1, len(raw), 12).tolist())
        for cut in sorted(c for c in cuts if 0 <= c < len(raw)):
            path = _write(tmp / f"cut{cut}_{name}", raw[:cut])
            cases.append({"path": path, "oracle": "error", "kind": "truncation"})
    return cases


def gzip_flips(tmp: Path, base: dict[str, str], rng: np.random.Generator, per_file: int = 50) -> list[dict]:
    cases = []
    for name in ("ct.nii.gz", "lab.nii.gz", "f32.nii.gz", "scaled.nii.gz", "n2.nii.gz"):
        raw = Path(base[name]).read_bytes()
        for i in range(per_file):
            data = flip(raw, int(rng.integers(0, len(raw))), int(rng.integers(1, 256)))
            path = _write(tmp / f"flip{i}_{name}", data)
            cases.append({"path": path, "oracle": "ref", "ref": base[name], "kind": "gzip_flip"})
    return cases


def gzip_layouts(tmp: Path, base: dict[str, str], rng: np.random.Generator) -> list[dict]:
    """Multi-member streams, padding, trailing bytes, a second copy appended (nibabel reads the first
    and ignores the rest; fastpipe refuses decoded data past what the header declares)."""
    src = base["ct.nii.gz"]
    raw, data = Path(src).read_bytes(), decoded(src)
    good = {f"split{k}": members(data, sorted(rng.integers(1, len(data), k).tolist())) for k in (1, 2, 5)}
    good |= {"split_in_header": members(data, [1, 100, 347]), "empty_member": members(data, [0, 0])}
    good |= {"pad": raw + bytes(100)}
    bad = {"garbage": raw + b"junk", "zero_then_junk": raw + b"\0\0\x01", "half_magic": raw + b"\x1f"}
    bad |= {"copy": raw + raw, "pad_between": raw + bytes(7) + raw}  # more data than the header declares
    bad |= {"magic_only": raw + b"\x1f\x8b", "bad_member": raw + b"\x1f\x8b\x08\x00junkjunkjunk"}
    bad |= {"cut_second": (raw + raw)[:-5], "crc_second": flip(raw + raw, 2 * len(raw) - 8, 4)}
    cases = [
        {"path": _write(tmp / f"{k}.nii.gz", v), "oracle": "load", "ref": src, "kind": "gzip_layout"}
        for k, v in good.items()
    ]
    cases += [
        {"path": _write(tmp / f"{k}.nii.gz", v), "oracle": "error", "kind": "gzip_layout"}
        for k, v in bad.items()
    ]
    return cases


def header_flips(
    tmp: Path, base: dict[str, str], rng: np.random.Generator, random_flips: int = 30
) -> list[dict]:
    cases = []
    for name in ("ct.nii", "ct.nii.gz", "ctq.nii", "ctq.nii.gz", "f32.nii.gz", "n2.nii", "n2.nii.gz"):
        data, gz = decoded(base[name]), name.endswith(".gz")
        hsize = 352 if not name.startswith("n2") else 544
        variants = [v for fields in HEADER_FLIPS if _fits(name, fields) and (v := _set(data, fields))]
        variants += [
            flip(data, int(rng.integers(0, hsize)), int(rng.integers(1, 256))) for _ in range(random_flips)
        ]
        for i, raw in enumerate(variants):
            path = _write(tmp / f"hdr{i}_{name}", encode(raw, gz))
            cases.append({"path": path, "oracle": "self", "kind": "header_flip"})
    return cases


def _set(data: bytes, fields: dict) -> bytes | None:
    """``set_fields``, or None where a value does not fit the field (NaN in NIfTI-2's int64 vox_offset)."""
    try:
        return set_fields(data, **fields)
    except (ValueError, OverflowError):
        return None


def _fits(name: str, fields: dict) -> bool:
    """NIfTI-2 has no magic ``ni1`` clash worth testing and 544-byte headers: skip NIfTI-1-only values."""
    return not (name.startswith("n2") and ("magic" in fields or "sizeof_hdr" in fields))


def huge_dims(tmp: Path, base: dict[str, str], rng: np.random.Generator) -> list[dict]:
    """Dims past int64, and dims a gzip file of this size could hold in theory (deflate's 1032x) but
    does not: reading must not allocate what the header claims (the child's limit is 1 GiB)."""
    cases = []
    dims = (
        {1: 2**40, 2: 2**40, 3: 2**20},
        {1: 2**62, 2: 2, 3: 2},
        {1: 2**31, 2: 2**31, 3: 2**31},
        {1: -(2**62)},
    )
    for name in ("n2.nii", "n2.nii.gz"):
        for i, dim in enumerate(dims):
            raw = set_fields(decoded(base[name]), dim=dim)
            path = _write(tmp / f"huge{i}_{name}", encode(raw, name.endswith(".gz")))
            cases.append({"path": path, "oracle": "error", "kind": "huge"})
    noise = _save(tmp / "noise.nii", rng.integers(-2000, 2000, (128, 128, 48), dtype=np.int16), np.eye(4))
    lie = set_fields(decoded(noise), dim={1: 1024, 2: 1024, 3: 700})  # 1.47 GB declared, ~1.5 MB of gzip
    for gz in (False, True):
        path = _write(tmp / f"lie.nii{'.gz' if gz else ''}", encode(lie, gz))
        cases.append({"path": path, "oracle": "error", "kind": "huge"})
    return cases


def odd_files(tmp: Path, base: dict[str, str]) -> list[dict]:
    """Wrong extensions, empty files, directories, a FIFO, links, non-NIfTI content."""
    ct_gz, ct = Path(base["ct.nii.gz"]).read_bytes(), Path(base["ct.nii"]).read_bytes()
    good = {"gz_named.nii": ct_gz, "raw_named.nii.gz": ct, "gz_named.img": ct_gz, "raw_named.txt": ct}
    bad = {"empty.nii": b"", "empty.nii.gz": b"", "text.nii.gz": b"not an image\n" * 30}
    bad |= {"gztext.nii.gz": gzip.compress(b"not an image\n" * 30), "gzempty.nii.gz": gzip.compress(b"")}
    bad |= {"png.nii": b"\x89PNG\r\n\x1a\n" + bytes(600), "magic.nii.gz": b"\x1f\x8b"}
    bad |= {"pair.nii": set_fields(ct, magic=b"ni1\x00")}
    cases = [
        {"path": _write(tmp / k, v), "oracle": "load", "ref": base["ct.nii"], "kind": "extension"}
        for k, v in good.items()
    ]
    cases += [{"path": _write(tmp / k, v), "oracle": "error", "kind": "odd_file"} for k, v in bad.items()]
    for name in ("dir.nii.gz", "dir.nii"):
        (tmp / name).mkdir()
        cases.append({"path": str(tmp / name), "oracle": "error", "kind": "directory"})
    os.mkfifo(tmp / "fifo.nii.gz")
    os.symlink(base["ct.nii.gz"], tmp / "link.nii.gz")
    os.symlink(tmp / "nowhere.nii.gz", tmp / "dangling.nii.gz")
    cases.append(
        {"path": str(tmp / "link.nii.gz"), "oracle": "load", "ref": base["ct.nii.gz"], "kind": "link"}
    )
    cases += [
        {"path": str(tmp / n), "oracle": "error", "kind": "odd_file"}
        for n in ("fifo.nii.gz", "dangling.nii.gz", "missing.nii")
    ]
    return cases


def voxel_cases(tmp: Path) -> list[dict]:
    """NaN/inf in images and float labels, scaling overflow, 1D/2D/4D/5D data."""
    f = structured_volume((8, 7, 6), np.float32)
    bad = {}
    for tag, value in (("nan", NAN), ("pinf", INF), ("ninf", -INF)):
        g, label = f.copy(), (f > 100).astype(np.float32)
        g[3, 2, 1] = label[3, 2, 1] = value
        bad |= {f"{tag}.nii.gz": g, f"{tag}_label.nii": label}
    bad |= {
        "1d.nii.gz": np.zeros(30, np.int16),
        "2d.nii.gz": np.zeros((9, 8), np.int16),
        "4d.nii": np.zeros((6, 5, 4, 3), np.int16),
    }
    bad |= {"4d_mid.nii.gz": np.zeros((6, 5, 1, 3), np.int16)}
    cases = [
        {"path": _save(tmp / k, v, np.eye(4)), "oracle": "error", "kind": "voxels"} for k, v in bad.items()
    ]
    overflow = _save(
        tmp / "overflow.nii", np.full((4, 4, 4), 30000, np.int16), np.eye(4), scl_slope=1e38, scl_inter=0.0
    )
    cases.append({"path": overflow, "oracle": "error", "kind": "voxels"})
    for k, v in {
        "4d_1.nii.gz": np.ones((6, 5, 4, 1), np.int16),
        "5d_11.nii": np.ones((6, 5, 4, 1, 1), np.uint8),
    }.items():
        path = _save(tmp / k, v, np.eye(4))
        cases.append({"path": path, "oracle": "load", "ref": path, "kind": "ndim"})
    return cases


def chain_cases(tmp: Path, base: dict[str, str]) -> list[dict]:
    """Image/label pairs through LoadImaged -> EnsureChannelFirstd -> Orientationd -> Spacingd."""
    img = base["ct.nii.gz"]
    ct = nib.load(img)
    (tmp / "seg_dir.nii.gz").mkdir()
    lab = (np.asanyarray(ct.dataobj) > 100).astype(np.uint8)
    labels = {
        "shape": _save(tmp / "seg_shape.nii.gz", np.pad(lab, ((0, 0), (0, 0), (0, 1))), ct.affine),
        "affine": _save(tmp / "seg_affine.nii.gz", lab, ct.affine @ np.diag([1.0, 1.0, 1.1, 1.0])),
        "crc": _write(
            tmp / "seg_crc.nii.gz", flip(Path(_save(tmp / "s.nii.gz", lab, ct.affine)).read_bytes(), -8, 1)
        ),
        "cut": _write(tmp / "seg_cut.nii.gz", Path(tmp / "s.nii.gz").read_bytes()[:-100]),
        "dir": str(tmp / "seg_dir.nii.gz"),
        "nan": _save(tmp / "seg_nan.nii.gz", np.where(lab > 0, NAN, 0).astype(np.float32), ct.affine),
    }
    cases = [
        {"item": {"image": img, "label": p}, "oracle": "chain", "names": p, "kind": f"chain_{k}"}
        for k, p in labels.items()
    ]
    cases.append(
        {"item": {"image": img, "label": str(tmp / "s.nii.gz")}, "oracle": "chain_ok", "kind": "chain_ok"}
    )
    return cases


def all_cases(tmp: Path, seed: int = 15) -> list[dict]:
    """Every case, numbered; files under ``tmp``."""
    rng = np.random.default_rng(seed)
    base = bases(tmp)
    cases = (
        controls(base)
        + truncations(tmp, base, rng)
        + gzip_flips(tmp, base, rng)
        + gzip_layouts(tmp, base, rng)
    )
    cases += (
        header_flips(tmp, base, rng) + huge_dims(tmp, base, rng) + odd_files(tmp, base) + voxel_cases(tmp)
    )
    cases += chain_cases(tmp, base)
    for i, case in enumerate(cases):
        case["id"] = i
    return cases
