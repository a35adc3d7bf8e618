"""Property-based check: every valid NIfTI file reads as MONAI 1.6's ``LoadImage`` (NibabelReader) reads it.

Hypothesis draws the header class (NIfTI-1/2), byte order, voxel type, ``.nii``/``.nii.gz``, a small
shape with up to two trailing singleton dims, ``scl_slope``/``scl_inter``, sform and qform codes, an
oblique affine with flips (180-degree qform rotations among them) and a header extension. fastpipe's
``LoadImaged(dtype=float32)`` must give MONAI's default float32 voxels exactly, its affine and its
spatial shape. Examples are derandomised, so every run tests the same ones.
"""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpipe.transforms import LoadImaged

DTYPES = (np.int16, np.uint8, np.int8, np.uint16, np.int32, np.uint32, np.float32, np.float64, np.int64)
SCALING = st.none() | st.tuples(
    st.sampled_from([0.1, 2.0, -0.5, 1.0, 3.7e-3]), st.sampled_from([0.0, 0.3, -1024.0])
)


def _set_scaling(path: str, klass, endian: str, gz: bool, slope: float, inter: float) -> None:
    """Write ``scl_slope``/``scl_inter`` into the saved file's header (``nib.save`` writes its own)."""
    with open(path, "rb") as f:
        raw = f.read()
    raw = gzip.decompress(raw) if gz else raw
    size = klass.header_class.template_dtype.itemsize
    hdr = klass.header_class(binaryblock=raw[:size], endianness=endian, check=False)
    hdr["scl_slope"], hdr["scl_inter"] = slope, inter
    raw = hdr.binaryblock + raw[size:]
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if gz else raw)


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    dtype=st.sampled_from(DTYPES),
    klass=st.sampled_from([nib.Nifti1Image, nib.Nifti2Image]),
    endian=st.sampled_from("<>"),
    gz=st.booleans(),
    shape=st.tuples(*[st.integers(1, 6)] * 3),
    singletons=st.integers(0, 2),
    scaling=SCALING,
    codes=st.tuples(st.sampled_from([0, 1, 2, 4]), st.sampled_from([0, 1, 2])),
    angles=st.tuples(*[st.sampled_from([0.0, 0.3, -1.2, np.pi])] * 3),
    zooms=st.tuples(*[st.sampled_from([0.5, 0.8, 1.0, 2.5])] * 3),
    flips=st.tuples(*[st.sampled_from([-1, 1])] * 3),
    extension=st.booleans(),
)
def test_valid_files_read_as_monai_reads_them(
    tmp_path_factory,
    dtype,
    klass,
    endian,
    gz,
    shape,
    singletons,
    scaling,
    codes,
    angles,
    zooms,
    flips,
    extension,
):
    from monai.transforms import LoadImage

    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, shape + (1,) * singletons).astype(dtype)
    aff = np.eye(4)
    aff[:3, :3] = nib.eulerangles.euler2mat(*angles) @ np.diag(np.array(zooms) * flips)
    aff[:3, 3] = rng.normal(0, 10, 3)
    img = klass(data, None, header=klass.header_class(endianness=endian), dtype=dtype)
    img.header.set_qform(aff, code=codes[1])
    img.header.set_sform(aff, code=codes[0])
    if extension:
        img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment"))
    path = str(tmp_path_factory.mktemp("p") / ("v.nii.gz" if gz else "v.nii"))
    nib.save(img, path)
    if scaling is not None:
        _set_scaling(path, klass, endian, gz, *scaling)
    got = LoadImaged("image", dtype=torch.float32)({"image": path})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, meta = LoadImage(reader="NibabelReader", image_only=False)(path)
    want = np.asarray(want)
    while want.ndim > 3 and want.shape[-1] == 1:  # fastpipe drops trailing singleton dims
        want = want[..., 0]
    np.testing.assert_array_equal(got["image"].numpy(), want)
    np.testing.assert_allclose(
        got["image_meta_dict"]["affine"].numpy(), np.asarray(meta["affine"]), atol=1e-5
    )
    assert got["image_meta_dict"]["spatial_shape"] == tuple(int(s) for s in meta["spatial_shape"])
