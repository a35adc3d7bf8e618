"""read_nifti refuses damaged files with an error naming the file and what is wrong (issue 15).

gzip integrity (CRC32/ISIZE, multi-member, trailing bytes), non-finite voxels, header dims checked
before allocating, every header field the decode uses, directories and short gzip streams.
"""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fastpipe.transforms import LoadImaged
from fastpipe.transforms._nifti import read_nifti

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_corrupt import (  # noqa: E402
    decoded,
    deflate_span,
    encode,
    flip,
    members,
    rewrite,
    set_fields,
    structured_volume,
)
from _nifti_files import affine, write  # noqa: E402


@pytest.fixture
def label_gz(tmp_path) -> tuple[str, np.ndarray]:
    lab = structured_volume((48, 40, 24), np.uint8)
    return write(tmp_path / "lab.nii.gz", lab, affine((0.8, 0.8, 2.5))), lab


def refused(path, *patterns: str) -> str:
    """The message of the ``ValueError`` ``read_nifti(path)`` raises; it names ``path`` and each pattern."""
    with pytest.raises(ValueError) as info:
        read_nifti(path)
    msg = str(info.value)
    assert str(path) in msg
    for pattern in patterns:
        assert re.search(pattern, msg), f"{pattern!r} not in {msg!r}"
    return msg


# Finding 1: the gzip stream is checked to its end -------------------------------------------------


def test_byte_flips_in_deflate_stream_never_give_wrong_voxels(tmp_path, label_gz):
    src, lab = label_gz
    raw = Path(src).read_bytes()
    start, end = deflate_span(raw)
    rng = np.random.default_rng(15)
    outcomes = {"equal": 0, "refused": 0}
    for i in range(40):
        path = tmp_path / f"flip{i}.nii.gz"
        path.write_bytes(flip(raw, int(rng.integers(start, end)), int(rng.integers(1, 256))))
        try:
            arr = read_nifti(path).array
        except ValueError as err:
            assert str(path) in str(err)
            outcomes["refused"] += 1
            continue
        np.testing.assert_array_equal(arr, lab, err_msg=f"flip {i} loaded with wrong voxels")
        outcomes["equal"] += 1
    assert outcomes["refused"] >= 30, outcomes


@pytest.mark.parametrize("where", ["crc", "isize"])
def test_trailer_flip_is_crc_error(tmp_path, label_gz, where):
    raw = Path(label_gz[0]).read_bytes()
    path = tmp_path / "t.nii.gz"
    path.write_bytes(flip(raw, len(raw) - (8 if where == "crc" else 2), 0x40))
    refused(path, "CRC check failed")


def test_missing_trailer_is_truncated(tmp_path, label_gz):
    raw = Path(label_gz[0]).read_bytes()
    path = tmp_path / "t.nii.gz"
    path.write_bytes(raw[:-8])
    refused(path, "truncated", "trailer")


def test_multi_member_gzip_reads_as_one_stream(tmp_path, label_gz):
    data = decoded(label_gz[0])
    path = tmp_path / "m.nii.gz"
    path.write_bytes(members(data, [100, 300, 5000, len(data) - 3]))
    assert gzip.decompress(path.read_bytes()) == data
    np.testing.assert_array_equal(read_nifti(path).array, label_gz[1])


def test_multi_member_larger_than_one_read(tmp_path):
    """Several members and more than one 1 MiB read: the buffer grows as the data arrives."""
    vol = structured_volume((128, 96, 60), np.int16)
    data = decoded(write(tmp_path / "big.nii.gz", vol, np.eye(4)))
    path = tmp_path / "m.nii.gz"
    path.write_bytes(members(data, [200_000, 1_200_000]))
    np.testing.assert_array_equal(read_nifti(path).array, vol)


def test_zero_padding_after_last_member_is_allowed(tmp_path, label_gz):
    path = tmp_path / "p.nii.gz"
    path.write_bytes(Path(label_gz[0]).read_bytes() + bytes(512))
    np.testing.assert_array_equal(read_nifti(path).array, label_gz[1])


@pytest.mark.parametrize("tail", [b"junk", b"\x00\x00\x01", b"\x1f", b"\x1f\x8bXYZ"])
def test_trailing_garbage_is_refused(tmp_path, label_gz, tail):
    path = tmp_path / "g.nii.gz"
    path.write_bytes(Path(label_gz[0]).read_bytes() + tail)
    refused(path, "trailing garbage|truncated|corrupt gzip")


def test_corrupt_second_member_is_refused(tmp_path, label_gz):
    data = decoded(label_gz[0])
    two = members(data, [1000])
    path = tmp_path / "c.nii.gz"
    path.write_bytes(flip(two, len(two) - 8, 1))  # the second member's CRC
    refused(path, "CRC check failed in gzip member 2")


# Finding 3: inf is treated like NaN ----------------------------------------------------------------


@pytest.mark.parametrize("value", [np.inf, -np.inf])
@pytest.mark.parametrize("key", ["image", "label"])
def test_infinite_voxels_are_refused(tmp_path, value, key):
    data = np.zeros((6, 5, 4), np.float32)
    data[1, 2, 3] = value
    path = write(tmp_path / f"{key}.nii.gz", data, np.eye(4))
    with pytest.raises(ValueError, match=re.escape(path) + r": 1 of 120 voxels are NaN or infinite"):
        LoadImaged(key)({key: path})
    assert np.isinf(LoadImaged(key, check_nan=False)({key: path})[key].numpy()).sum() == 1


def test_scaling_overflow_to_inf_is_refused(tmp_path):
    path = write(
        tmp_path / "s.nii", np.full((4, 4, 4), 30000, np.int16), np.eye(4), scl_slope=1e36, scl_inter=0
    )
    refused(path, "voxels are NaN or infinite")


# Finding 4: dims are checked before anything is allocated -----------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_huge_dims_name_the_dims_not_memory(tmp_path, label_gz, gz):
    path = rewrite(
        label_gz[0], tmp_path / ("h.nii.gz" if gz else "h.nii"), gz=gz, dim={1: 32767, 2: 32767, 3: 32767}
    )
    refused(path, r"dim=\(32767, 32767, 32767\)")


def test_nifti2_dim_product_overflowing_int64(tmp_path):
    import nibabel as nib

    path = str(tmp_path / "o.nii.gz")
    nib.save(nib.Nifti2Image(np.zeros((4, 4, 4), np.float64), np.eye(4)), path)
    rewrite(path, path, dim={1: 2**40, 2: 2**40, 3: 2**20})
    refused(path, r"dim=\(1099511627776, 1099511627776, 1048576\)")


@pytest.mark.parametrize(
    "convert", [(b"\n", b"\r\n"), (b"\r\n", b"\n"), None], ids=["unix2dos", "dos2unix", "eol"]
)
def test_nifti2_damaged_by_an_end_of_line_conversion_is_named(tmp_path, convert):
    """NIfTI-2's eol_check bytes catch a text-mode transfer: the error was about whatever field the shift
    hit (``dim[0]=196640``), and a file whose eol_check alone was damaged loaded where nibabel refuses it."""
    import nibabel as nib

    path = tmp_path / "n2.nii"
    nib.save(nib.Nifti2Image(structured_volume((6, 5, 4), np.float32), np.eye(4)), str(path))
    raw = path.read_bytes()
    path.write_bytes(raw.replace(*convert) if convert else flip(raw, 10, 0x10))
    refused(path, r"invalid NIfTI header: eol_check=\[\d+, \d+, \d+, \d+\] .* end-of-line conversion")
    path.write_bytes(set_fields(raw, eol_check=[0, 0, 0, 0]))  # nibabel reads an all-zero eol_check
    np.testing.assert_array_equal(read_nifti(path).array, structured_volume((6, 5, 4), np.float32))


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(("index", "value"), [(3, -5), (2, 0), (1, -1), (0, 9), (0, 0)])
def test_bad_dim_is_named(tmp_path, label_gz, gz, index, value):
    path = rewrite(label_gz[0], tmp_path / ("d.nii.gz" if gz else "d.nii"), gz=gz, dim={index: value})
    refused(path, re.escape(f"dim[{index}]={value}"))


# A header that does not describe its data -------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("where", ["dim", "tail"])
def test_data_longer_than_the_header_declares_is_refused(tmp_path, label_gz, gz, where):
    src, lab = label_gz
    path = tmp_path / ("long.nii.gz" if gz else "long.nii")
    if where == "dim":  # two slices fewer than the data holds: nibabel gives a (48, 40, 22) volume
        rewrite(src, path, gz=gz, dim={3: lab.shape[2] - 2})
    else:
        path.write_bytes(encode(decoded(src) + b"\x01" * 64, gz))
    refused(path, r"more than the header \(dim=.* declares", "does not match its data")


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("tail", [20, 200])
def test_a_tiny_volume_with_bytes_past_its_voxels_is_refused_with_the_true_count(tmp_path, gz, tail):
    """A file decoding to fewer bytes than the header read (548) was accepted with the extra bytes
    past its voxels, and a longer one was reported with a wrong count."""
    src = write(tmp_path / "tiny.nii", np.arange(8, dtype=np.uint8).reshape(2, 2, 2), np.eye(4))
    path = tmp_path / ("long.nii.gz" if gz else "long.nii")
    path.write_bytes(encode(decoded(src) + b"\x07" * tail, gz))
    refused(path, f"holds {360 + tail} bytes, {tail} more than the header", "does not match its data")


@pytest.mark.parametrize("gz", [False, True])
def test_an_extension_the_voxels_overlap_is_refused_and_a_real_one_reads(tmp_path, label_gz, gz):
    import struct

    import nibabel as nib

    src, lab = label_gz
    raw = decoded(src)
    ext = struct.pack("<ii", 32, 6) + b"comment-padded-to-32-b"[:24].ljust(24, b"\0")
    flagged = raw[:348] + b"\x01\0\0\0" + ext + raw[352:]  # vox_offset still 352: voxels shifted by 32
    bad = tmp_path / ("ext_bad.nii.gz" if gz else "ext_bad.nii")
    bad.write_bytes(encode(flagged, gz))
    refused(bad, "vox_offset=352", "overlaps the header extension")
    good = tmp_path / ("ext_ok.nii.gz" if gz else "ext_ok.nii")
    rewrite(bad, good, gz=gz, vox_offset=384)  # the same bytes, the voxels said to start after it
    np.testing.assert_array_equal(read_nifti(good).array, lab)
    np.testing.assert_array_equal(np.asanyarray(nib.load(good).dataobj), lab)


# Finding 5: header fields are validated and named -------------------------------------------------

BAD_FIELDS = [
    ({"vox_offset": np.nan}, "vox_offset=nan"),
    ({"vox_offset": -352}, "vox_offset=-352"),
    ({"vox_offset": 100}, "vox_offset=100"),
    ({"vox_offset": 352.5}, "vox_offset=352.5"),
    ({"vox_offset": 1e12}, "truncated|can decode to"),
    ({"sform_code": 0, "qform_code": 1, "quatern_b": 0.9, "quatern_c": 0.9}, "quatern_b/c/d"),
    ({"sform_code": 0, "qform_code": 1, "quatern_d": np.nan}, "quatern_d"),
    ({"sform_code": 0, "qform_code": 1, "pixdim": {0: 3.0}}, r"pixdim\[0\]=3"),
    ({"scl_slope": 2.0, "scl_inter": np.nan}, "scl_inter=nan"),
    ({"scl_slope": 2.0, "scl_inter": np.inf}, "scl_inter=inf"),
    ({"scl_slope": -np.inf}, "scl_slope=-inf"),
    ({"pixdim": {2: np.inf}}, r"pixdim\[2\]=inf"),
    ({"pixdim": {3: np.nan}}, r"pixdim\[3\]=nan"),
    ({"datatype": 1234}, "datatype=1234"),
    ({"datatype": 32, "bitpix": 64}, "datatype=32"),  # complex64: not a voxel type we read
    ({"bitpix": 16}, "bitpix=16"),
    ({"qform_code": 9}, "qform_code=9"),
    ({"sform_code": -1}, "sform_code=-1"),
    ({"srow_y": [0, np.nan, 0, 0]}, "srow_y"),
    ({"sform_code": 0, "qform_code": 0, "pixdim": {1: 1e-30}}, "singular"),
]


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(("fields", "pattern"), BAD_FIELDS, ids=[p for _, p in BAD_FIELDS])
def test_bad_header_field_is_named(tmp_path, label_gz, gz, fields, pattern):
    path = rewrite(label_gz[0], tmp_path / ("f.nii.gz" if gz else "f.nii"), gz=gz, **fields)
    refused(path, pattern)


@pytest.mark.parametrize("gz", [False, True])
def test_a_singular_sform_gives_way_to_the_qform_as_monai_rectifies_it(tmp_path, label_gz, gz):
    """MONAI's reader replaces an sform whose voxel sizes disagree with pixdim (here all zeros) by the
    qform, which agrees with it by construction; fastpipe reads the same affine."""
    import nibabel as nib
    from monai.data.utils import correct_nifti_header_if_necessary

    path = rewrite(label_gz[0], tmp_path / ("s.nii.gz" if gz else "s.nii"), gz=gz,
                   srow_x=[0, 0, 0, 0], srow_y=[0, 0, 0, 0], srow_z=[0, 0, 0, 0])  # fmt: skip
    want = correct_nifti_header_if_necessary(nib.load(path)).affine
    np.testing.assert_allclose(read_nifti(path).affine, want, atol=1e-6)
    np.testing.assert_array_equal(read_nifti(path).array, label_gz[1])


@pytest.mark.parametrize(
    "fields",
    [{"pixdim": {1: 0.0}}, {"pixdim": {2: -1.5}}, {"sform_code": 0, "qform_code": 1, "pixdim": {3: -2.5}},
     {"sform_code": 0, "qform_code": 0, "pixdim": {1: 0.0, 2: -0.8}}],
    ids=["zero-sform", "negative-sform", "negative-qform", "zero-and-negative-no-codes"],
)  # fmt: skip
def test_zero_or_negative_pixdim_reads_as_monai_reads_it(tmp_path, label_gz, fields):
    """nibabel's loader sets a zero ``pixdim[1..3]`` to 1 and a negative one to its absolute value, so
    MONAI reads these files (the sform, or the qform/fallback from the fixed sizes); fastpipe refused them."""
    import nibabel as nib
    from monai.data.utils import correct_nifti_header_if_necessary

    path = rewrite(label_gz[0], tmp_path / "p.nii.gz", **fields)
    want = correct_nifti_header_if_necessary(nib.load(path))
    vol = read_nifti(path)
    np.testing.assert_allclose(vol.affine, want.affine, atol=1e-6)
    np.testing.assert_array_equal(vol.header.get_zooms(), want.header.get_zooms())
    np.testing.assert_array_equal(vol.array, label_gz[1])


def test_qfac_zero_reads_as_one(tmp_path, label_gz):
    """The NIfTI standard (and nibabel) read qfac = pixdim[0] = 0 as 1."""
    base = rewrite(label_gz[0], tmp_path / "q1.nii", sform_code=0, qform_code=1)
    zero = rewrite(base, tmp_path / "q0.nii", pixdim={0: 0.0})
    np.testing.assert_array_equal(read_nifti(zero).affine, read_nifti(base).affine)


@pytest.mark.parametrize("nifti", [1, 2])
@pytest.mark.parametrize("flips", [(-1, -1, 1), (-1, 1, 1)], ids=["LPS", "x-flip"])
def test_qform_of_a_180_degree_rotation_reads(tmp_path, flips, nifti):
    """A qform whose quaternion has w = 0 (b**2 + c**2 + d**2 = 1: a 180-degree rotation, as an LPS
    qform is) is valid: nibabel and MONAI read it; it was refused as "no rotation"."""
    import nibabel as nib

    lab = structured_volume((12, 10, 8), np.uint8)
    aff = np.diag([*(np.array(flips) * (0.8, 0.9, 2.5)), 1.0])
    img = (nib.Nifti1Image if nifti == 1 else nib.Nifti2Image)(lab, None)
    img.header.set_qform(aff, code=1)
    img.header.set_sform(aff, code=0)
    path = str(tmp_path / "q.nii.gz")
    nib.save(img, path)
    assert sum(float(img.header[f"quatern_{c}"]) ** 2 for c in "bcd") == 1.0
    vol = read_nifti(path)
    np.testing.assert_allclose(vol.affine, nib.load(path).affine, atol=1e-6)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-6)
    np.testing.assert_array_equal(vol.array, lab)


# Finding 6: a directory, an empty file and a short gzip say what they are -------------------------


def test_directory_is_named_a_directory(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.mkdir()
    with pytest.raises(IsADirectoryError, match=re.escape(str(path)) + ": is a directory"):
        LoadImaged("image")({"image": str(path)})
    with pytest.raises(ValueError, match="is a directory"):  # caught with every other bad file
        LoadImaged("image")({"image": str(path)})


def test_empty_file(tmp_path):
    path = tmp_path / "e.nii.gz"
    path.write_bytes(b"")
    refused(path, "empty file")


@pytest.mark.parametrize("cut", [2, 10, 50, 90])
def test_gzip_cut_before_the_header_ends_is_truncated(tmp_path, label_gz, cut):
    path = tmp_path / "s.nii.gz"
    path.write_bytes(Path(label_gz[0]).read_bytes()[:cut])
    refused(path, rf"truncated file: the gzip stream ends after {cut} bytes")


def test_raw_bytes_named_nii_gz_still_read(tmp_path, label_gz):
    path = tmp_path / "raw.nii.gz"
    path.write_bytes(encode(decoded(label_gz[0]), gz=False))
    np.testing.assert_array_equal(read_nifti(path).array, label_gz[1])
