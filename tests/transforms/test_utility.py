"""ToDeviced and EnsureTyped: tensors move or convert, metadata dicts stay, MONAI-style key errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastpipe.transforms import EnsureTyped, ToDeviced
from fastpipe.transforms.utility import device_point


def _item():
    meta = {"affine": torch.eye(4, dtype=torch.float64), "filename_or_obj": "a.nii.gz"}
    return {"image": torch.ones(1, 2, 2, 2), "label_fg_indices": torch.arange(3), "image_meta_dict": meta}


def test_to_deviced_moves_listed_tensors_and_leaves_meta_alone(device):
    item = _item()
    out = ToDeviced(["image", "label_fg_indices"], device=device)(item)
    assert out["image"].device.type == device.type and out["label_fg_indices"].device.type == device.type
    assert (
        out["image_meta_dict"] is item["image_meta_dict"]
        and out["image_meta_dict"]["affine"].device.type == "cpu"
    )
    assert out is not item and item["image"].device.type == "cpu"
    assert device_point(ToDeviced("image", device)) == device


def test_to_deviced_numpy_input_and_missing_keys():
    out = ToDeviced("image", "cpu")({"image": np.zeros((1, 2, 2, 2), np.float32)})
    assert isinstance(out["image"], torch.Tensor)
    with pytest.raises(KeyError, match=r"ToDeviced: key 'label' missing from item with keys \['image'\]"):
        ToDeviced(["image", "label"], "cpu")({"image": torch.zeros(1)})
    assert set(ToDeviced(["image", "label"], "cpu", allow_missing_keys=True)({"image": torch.zeros(1)})) == {
        "image"
    }
    with pytest.raises(TypeError, match="'image' is str"):
        ToDeviced("image", "cpu")({"image": "a.nii.gz"})


def test_ensure_typed_dtype_device_and_numpy():
    item = {"image": np.arange(4, dtype=np.int16), "image_meta_dict": {"affine": np.eye(4)}}
    out = EnsureTyped(["image", "image_meta_dict"], dtype="float32")(item)
    assert out["image"].dtype == torch.float32 and isinstance(out["image_meta_dict"]["affine"], np.ndarray)
    out = EnsureTyped("image", data_type="numpy", dtype=torch.float64)({"image": torch.arange(3)})
    assert isinstance(out["image"], np.ndarray) and out["image"].dtype == np.float64
    assert device_point(EnsureTyped("image")) is None
    assert device_point(EnsureTyped("image", device="cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="data_type must be 'tensor' or 'numpy', got 'list'"):
        EnsureTyped("image", data_type="list")
    with pytest.raises(KeyError, match="EnsureTyped: key 'label'"):
        EnsureTyped("label")({"image": torch.zeros(1)})


def test_ensure_typed_leaves_strings_as_monai_does():
    """MONAI's EnsureTyped/ToTensord pass a string (a case name under a listed key) through; fastpipe's
    failed every item with numpy's 'can't convert np.ndarray of type numpy.str_'."""
    import monai.transforms as M

    item = {"image": np.zeros((1, 2, 2), "int16"), "name": "case0", "tags": np.array(["a", "b"])}
    keys = ["image", "name", "tags"]
    ours = EnsureTyped(keys, dtype=torch.float32)(item)
    theirs = M.EnsureTyped(keys, dtype=torch.float32, track_meta=False)(dict(item))
    assert ours["name"] == theirs["name"] == "case0"
    assert ours["tags"] is item["tags"] and theirs["tags"] is item["tags"]
    assert ours["image"].dtype == theirs["image"].dtype == torch.float32


VALUES = [1.5, [1.5, 2.5], (1, 2.5), [[1, 2], [3.5, 4]], 3, True, np.float64(1.5),
          np.arange(3, dtype=np.uint16), np.arange(3, dtype=np.uint32), np.zeros(2)]  # fmt: skip


@pytest.mark.parametrize("data_type", ["tensor", "numpy"])
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_ensure_typed_gives_monais_dtype_for_numbers_and_unsigned_arrays(value, data_type):
    """A Python float (a classification target in the item, say) became a float64 tensor where MONAI's
    is float32 (torch's default; a float32 model's loss then fails on a Double target), and a uint16
    array a uint16 tensor where MONAI's is int32 (uint32/64: int64)."""
    from monai.transforms import EnsureTyped as MonaiEnsureTyped

    theirs = MonaiEnsureTyped("x", data_type=data_type, track_meta=False)({"x": value})["x"]
    ours = EnsureTyped("x", data_type=data_type)({"x": value})["x"]
    assert type(ours) is type(theirs) and ours.dtype == theirs.dtype
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
