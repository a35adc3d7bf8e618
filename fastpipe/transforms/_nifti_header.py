"""NIfTI-1/2 header parsing and validation: every field the decode relies on is checked first.

nibabel parses the binary block (with its own checks off, so that nothing is silently "fixed");
the functions here check the fields fastpipe uses before anything is allocated or computed from
them, and name the field in the error: ``dim[3]=-5``, ``datatype=1234``, ``bitpix=8``,
``vox_offset=nan``, ``pixdim[2]=nan``, ``qform_code=9``, ``quatern_b``, ``srow_y``, ``scl_inter=inf``.
Every error is a ``ValueError`` whose message starts with the file's path.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError

HEADER_CLASSES = {348: nib.Nifti1Header, 540: nib.Nifti2Header}
_NIFTI_MAGICS = {348: b"n+1\x00", 540: b"n+2\x00"}  # single-file magic of each header size
_XFORM_CODES = frozenset(int(c) for c in nib.nifti1.xform_codes.value_set())
_EOL_CHECK = (13, 10, 26, 10)  # NIfTI-2 bytes 8..11: CR LF SUB LF
_SINGULAR_RATIO = 1e-8  # smallest / largest singular value of the affine's 3x3 below this: singular


@dataclass(frozen=True)
class Layout:
    """Where the voxels are in the decoded file and what they are.

    Attributes:
        offset: ``vox_offset``, bytes before the first voxel.
        shape: ``dim[1..dim[0]]``, every entry >= 1.
        dtype: voxel type in the file's byte order.
    """

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def end(self) -> int:
        """Bytes the file must hold: header, extensions and voxels (exact, no overflow)."""
        return self.offset + math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        """``dim=(512, 512, 90) int16`` for error messages."""
        return f"dim={self.shape} {self.dtype.newbyteorder('=')}"


def header_error(path: str, field: str, problem: str) -> ValueError:
    """``ValueError("<path>: invalid NIfTI header: <field> <problem>")``."""
    return ValueError(f"{path}: invalid NIfTI header: {field} {problem}")


def parse_header(buf: bytes | bytearray | np.ndarray, path: str) -> nib.Nifti1Header:
    """The nibabel header of ``buf``; ``ValueError`` when ``buf`` is not single-file NIfTI-1/2."""
    if len(buf) < 4:
        raise ValueError(f"{path}: not a NIfTI file (only {len(buf)} bytes)")
    sizes = {endian: struct.unpack(f"{endian}i", bytes(buf[:4]))[0] for endian in "<>"}
    endian = next((e for e, n in sizes.items() if n in HEADER_CLASSES), None)
    if endian is None:
        raise ValueError(f"{path}: not a NIfTI file (first bytes {bytes(buf[:8])!r} are no NIfTI-1/2 header)")
    klass = HEADER_CLASSES[sizes[endian]]
    nbytes = klass.template_dtype.itemsize
    if len(buf) < nbytes:
        raise ValueError(f"{path}: truncated file: {len(buf)} bytes, a NIfTI header needs {nbytes}")
    hdr = klass(binaryblock=bytes(buf[:nbytes]), endianness=endian, check=False)
    magic = bytes(hdr["magic"].tobytes()[:4])
    if magic != _NIFTI_MAGICS[sizes[endian]]:
        raise ValueError(
            f"{path}: NIfTI magic {magic!r} is not {_NIFTI_MAGICS[sizes[endian]]!r}, the single-file magic "
            f"of a {sizes[endian]}-byte header (.hdr/.img pairs are unsupported)"
        )
    _check_eol(hdr, path)
    return hdr


def _check_eol(hdr: nib.Nifti1Header, path: str) -> None:
    """NIfTI-2's ``eol_check`` bytes (``0D 0A 1A 0A``, or all 0 as nibabel reads them), there to catch a
    file damaged by an end-of-line conversion (a text-mode transfer), whose voxels are shifted too."""
    if "eol_check" not in hdr.keys():
        return
    eol = tuple(int(b) for b in hdr["eol_check"])
    if eol not in (_EOL_CHECK, (0, 0, 0, 0)):
        raise header_error(
            path,
            f"eol_check={list(eol)}",
            f"is not {list(_EOL_CHECK)}: the file was damaged by an end-of-line conversion (a text-mode "
            "transfer), which shifts its voxels too",
        )


def data_layout(hdr: nib.Nifti1Header, path: str) -> Layout:
    """The checked ``dim``, ``datatype``/``bitpix`` and ``vox_offset`` of ``hdr``."""
    ndim = int(hdr["dim"][0])
    if not 1 <= ndim <= 7:
        raise header_error(path, f"dim[0]={ndim}", "is not a number of dimensions in 1..7")
    shape = tuple(int(d) for d in hdr["dim"][1 : ndim + 1])
    for i, d in enumerate(shape, start=1):
        if d < 1:
            raise header_error(path, f"dim[{i}]={d}", "must be at least 1")
    return Layout(offset=_vox_offset(hdr, path), shape=shape, dtype=_voxel_dtype(hdr, path))


def _voxel_dtype(hdr: nib.Nifti1Header, path: str) -> np.dtype:
    code = int(hdr["datatype"])
    try:
        dtype = hdr.get_data_dtype()
    except (KeyError, HeaderDataError) as err:
        raise header_error(path, f"datatype={code}", "is no NIfTI data type") from err
    if dtype.kind not in "iuf" or dtype.fields is not None or dtype.itemsize > 8:
        raise header_error(
            path, f"datatype={code}", f"({dtype}) is not supported: expected an integer or float type"
        )
    bitpix = int(hdr["bitpix"])
    if bitpix != 8 * dtype.itemsize:
        raise header_error(
            path, f"bitpix={bitpix}", f"does not match datatype={code} ({dtype}, {8 * dtype.itemsize} bits)"
        )
    return dtype


def _vox_offset(hdr: nib.Nifti1Header, path: str) -> int:
    raw = float(hdr["vox_offset"])
    least = int(hdr.single_vox_offset)  # 352 (NIfTI-1) / 544 (NIfTI-2): header + extension flag
    if not math.isfinite(raw) or raw != int(raw) or raw < least:
        raise header_error(path, f"vox_offset={raw:g}", f"must be a whole number of bytes >= {least}")
    return int(raw)


def check_extensions(hdr: nib.Nifti1Header, head: bytes | bytearray, layout: Layout, path: str) -> None:
    """The header's extension flag against ``vox_offset``: when the flag says extensions follow the
    header, the first one (``esize`` bytes from the flag's end) must end at or before the voxels.

    ``head``: the file's first decoded bytes (the flag and the first extension's ``esize``, where the
    file holds them). A flagged extension that overlaps the voxels means ``vox_offset`` was left at
    its no-extension value (or the flag is damaged): the voxels would be read shifted, so it is an error.
    """
    flag_at = int(hdr.single_vox_offset) - 4  # 348 (NIfTI-1) / 540 (NIfTI-2)
    if len(head) <= flag_at or head[flag_at] == 0:
        return
    first = flag_at + 4  # where the first extension starts
    if len(head) >= first + 4:
        esize = struct.unpack(f"{hdr.endianness}i", bytes(head[first : first + 4]))[0]
        if esize < 8 or first + esize > layout.offset:
            raise header_error(
                path,
                f"vox_offset={layout.offset}",
                f"overlaps the header extension it flags (extension[0]={head[flag_at]}, the first "
                f"extension's esize={esize} from byte {first}): the voxels would be read shifted",
            )
    elif first + 8 > layout.offset:
        raise header_error(
            path,
            f"vox_offset={layout.offset}",
            f"leaves no room for the header extension it flags at byte {first}",
        )


def slope_inter(hdr: nib.Nifti1Header, path: str) -> tuple[float, float] | None:
    """``(scl_slope, scl_inter)`` when the header asks for scaling; None for none (slope 0 or NaN, or 1/0)."""
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if slope == 0 or math.isnan(slope):  # the NIfTI convention for "no scaling"
        return None
    if math.isinf(slope):
        raise header_error(path, f"scl_slope={slope}", "must be finite (0 or NaN mean no scaling)")
    if not math.isfinite(inter):
        raise header_error(
            path, f"scl_inter={inter}", f"must be finite when scl_slope={slope:g} scales the data"
        )
    return None if (slope, inter) == (1.0, 0.0) else (slope, inter)


def best_affine(hdr: nib.Nifti1Header, ndim: int, path: str) -> np.ndarray:
    """nibabel's ``get_best_affine()`` (sform, else qform, else pixdim) once its fields are checked.

    Args:
        hdr: the header (``pixdim[0]`` = 0 is set to 1, as the NIfTI standard reads it; ``pixdim[1..3]``
            zero is set to 1 and negative to its absolute value, as nibabel's loader fixes them for MONAI).
        ndim: ``dim[0]``; ``pixdim[1..min(ndim, 3)]`` must be finite.
        path: the file, for messages.
    """
    _fix_pixdims(hdr)
    for i in range(1, min(ndim, 3) + 1):
        size = float(hdr["pixdim"][i])
        if not math.isfinite(size):
            raise header_error(path, f"pixdim[{i}]={size:g}", "must be a finite voxel size")
    codes = {name: int(hdr[name]) for name in ("sform_code", "qform_code")}
    for name, code in codes.items():
        if code not in _XFORM_CODES:
            raise header_error(path, f"{name}={code}", f"is no NIfTI xform code {sorted(_XFORM_CODES)}")
    if codes["sform_code"]:
        source = "sform"
        _check_finite(hdr, ("srow_x", "srow_y", "srow_z"), path)
    elif codes["qform_code"]:
        source = "qform"
        _check_qform(hdr, path)
    else:
        source = "pixdim"
    try:
        affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
        affine, source = _rectified(hdr, affine, source, ndim)
    except (HeaderDataError, ValueError, np.linalg.LinAlgError) as err:
        raise ValueError(f"{path}: invalid NIfTI header: cannot build the {source} affine ({err})") from err
    _check_affine(affine, source, path)
    return affine


def _rectified(hdr: nib.Nifti1Header, best: np.ndarray, source: str, ndim: int) -> tuple[np.ndarray, str]:
    """MONAI's ``correct_nifti_header_if_necessary``, step for step, so a file read here gets the affine
    MONAI's reader gives it: where the best affine's voxel sizes (``dim[0]`` columns, as MONAI counts
    them) disagree with ``pixdim``, the sform or qform that agrees is used (the qform made from the
    sform has its shears stripped, as nibabel's ``set_qform`` does); ``dim[0]`` >= 5 is left alone.
    ``hdr`` changes as MONAI's header does (``set_sform``, ``set_qform``, or ``set_zooms`` where nothing
    agrees), so the header fields in the metadata are MONAI's too."""
    if ndim >= 5:
        return best, source
    pixdim = np.asarray(hdr.get_zooms()[:ndim], dtype=np.float64)

    def norms(affine: np.ndarray) -> np.ndarray:
        n = np.sqrt((np.asarray(affine, dtype=np.float64)[:ndim, :ndim] ** 2).sum(axis=0))
        n[n == 0] = 1.0  # MONAI's affine_to_spacing(suppress_zeros=True)
        return n

    def agrees(affine: np.ndarray) -> bool:
        return bool(np.allclose(pixdim, norms(affine)))

    if agrees(best):
        return best, source
    sform, qform = np.asarray(hdr.get_sform(), np.float64), np.asarray(hdr.get_qform(), np.float64)
    if int(hdr["sform_code"]):
        if agrees(sform):
            return best, source
        if agrees(qform):  # MONAI's set_sform(qform): the header's srow rows, and the affine, are its
            hdr.set_sform(qform)
            return np.asarray(hdr.get_sform(), np.float64), "qform (the sform disagrees with pixdim)"
    if int(hdr["qform_code"]):
        if agrees(qform):
            return best, source
        if agrees(sform):  # here sform_code is 0: the new qform is the best affine
            hdr.set_qform(sform)  # MONAI's: the quaternion, offsets, qfac and voxel sizes
            return np.asarray(hdr.get_qform(), np.float64), "sform (the qform disagrees with pixdim)"
    hdr.set_zooms(norms(best))  # MONAI: "Modifying image pixdim from ... to ..."
    return best, source


def _fix_pixdims(hdr: nib.Nifti1Header) -> None:
    """nibabel's ``_chk_pixdims(fix=True)``, which its loader runs for MONAI: a zero ``pixdim[1..3]``
    becomes 1, then a negative one its absolute value (the sform, if any, still gives the affine)."""
    spat = np.asarray(hdr["pixdim"][1:4], dtype=np.float64)
    if not (spat <= 0).any():
        return
    spat[spat == 0] = 1.0
    hdr["pixdim"][1:4] = np.abs(spat)


def _check_finite(hdr: nib.Nifti1Header, fields: tuple[str, ...], path: str) -> None:
    for name in fields:
        values = np.asarray(hdr[name], dtype=np.float64)
        if not np.isfinite(values).all():
            raise header_error(path, f"{name}={values.tolist()}", "must be finite")


def _check_qform(hdr: nib.Nifti1Header, path: str) -> None:
    _check_finite(hdr, ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"), path)
    bcd = [float(hdr[f"quatern_{c}"]) for c in "bcd"]
    # nibabel's fillpositive: |w**2| under the threshold is w = 0, a 180-degree rotation (an LPS qform)
    if 1.0 - sum(v * v for v in bcd) < -abs(hdr.quaternion_threshold):  # negative in NIfTI-2
        raise header_error(path, f"quatern_b/c/d={bcd}", "is no rotation: b**2 + c**2 + d**2 > 1")
    qfac = float(hdr["pixdim"][0])
    if qfac == 0:
        hdr["pixdim"][0] = 1.0  # the standard: "if qfac is 0, treat it as 1"
    elif qfac not in (-1.0, 1.0):
        raise header_error(path, f"pixdim[0]={qfac:g}", "(qfac) must be -1 or 1")


def _check_affine(affine: np.ndarray, source: str, path: str) -> None:
    if not np.isfinite(affine).all():
        raise ValueError(
            f"{path}: invalid NIfTI header: the {source} affine is not finite: {affine.tolist()}"
        )
    sv = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if not sv[-1] > _SINGULAR_RATIO * sv[0]:
        raise ValueError(f"{path}: invalid NIfTI header: the {source} affine is singular: {affine.tolist()}")


def header_fields(hdr: nib.Nifti1Header) -> dict[str, np.ndarray]:
    """The header's numeric fields as MONAI's ``NibabelReader`` puts them in the metadata: little-endian
    copies (``dim``, ``srow_x``, ``qform_code``, ...), text fields left out, and ``vox_offset`` 0 and
    ``scl_slope``/``scl_inter`` NaN, as in the header of the image nibabel loads (which applied the
    scaling). ``pixdim`` is not among them (see ``io.header_pixdim``). MONAI's transforms leave these
    at the loaded values, so fastpipe's do too."""
    fields = dict(hdr.as_byteswapped("<"))
    out = {k: np.array(v) for k, v in fields.items() if np.asarray(v).dtype.kind in "biuf"}
    out.pop("pixdim", None)
    out["vox_offset"] = np.zeros((), out["vox_offset"].dtype)
    for name in ("scl_slope", "scl_inter"):
        out[name] = np.full((), np.nan, out[name].dtype)
    return out
