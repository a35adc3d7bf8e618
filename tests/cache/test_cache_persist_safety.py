"""Persistent cache entries cannot run code, belong to one key and item, and store only what they can."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import zlib

import numpy as np
import pytest
import safetensors.torch
import torch
from _persist_helpers import LoadNpy, assert_same_items, write_files

from fastpipe import CacheDataset
from fastpipe.cache._format import (
    CorruptEntryError,
    UnstorableEntryError,
    decode_entry,
    encode_entry,
)
from fastpipe.cache._safetensors_layout import pack, unpack


def _open(data, cache, load=None, **kwargs):
    return CacheDataset(data, [load or LoadNpy()], progress=False, persist_dir=cache, num_workers=1, **kwargs)


def _envelope(magic: bytes, payload: bytes) -> bytes:
    """A file with a valid magic, length and checksum around ``payload``."""
    return magic + len(payload).to_bytes(8, "little") + payload + zlib.crc32(payload).to_bytes(4, "little")


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def _crafted(kind: str, marker) -> bytes:
    evil = pickle.dumps(_RunsCommand(f"touch {marker}"))
    if kind == "old-format pickle":  # what fastpipe wrote before: torch.load ran it
        return _envelope(b"FPCACHE1", evil)
    if kind == "pickle in the new envelope":
        return _envelope(b"FPCACHE2", evil)
    doc = {"format": 2, "key": "x", "tree": {"$pickle": evil.hex()}}  # a valid safetensors, unknown tag
    return _envelope(b"FPCACHE2", safetensors.torch.save({}, metadata={"fastpipe": json.dumps(doc)}))


@pytest.mark.parametrize("kind", ["old-format pickle", "pickle in the new envelope", "unknown tag"])
def test_crafted_entry_is_rejected_naming_the_file_and_nothing_runs(tmp_path, kind):
    data, cache, marker = write_files(tmp_path, n=2), tmp_path / "cache", tmp_path / "ran"
    fresh = _open(data, cache)
    entries = sorted(cache.glob("*.fpc"))
    assert len(entries) == 2
    for entry in entries:
        entry.write_bytes(_crafted(kind, marker))
    load = LoadNpy()
    with pytest.warns(RuntimeWarning, match="rejected") as record:
        ds = _open(data, cache, load)
    for entry in entries:  # each file named in a warning
        assert any(f"{entry.name} rejected" in str(w.message) for w in record)
    assert not marker.exists(), "a crafted cache entry ran a command"
    assert load._calls == 2 and ds.stats()["persist"]["rejected"] == 2
    assert_same_items(ds, fresh)


def test_entry_copied_over_another_keys_file_is_rejected(tmp_path):
    data, cache = write_files(tmp_path, n=2), tmp_path / "cache"
    fresh = _open(data, cache)
    by_item = {json.loads(_meta(p))["sources"][0]: p for p in cache.glob("*.fpc")}
    src, dst = by_item[data[1]["image"]], by_item[data[0]["image"]]
    shutil.copyfile(src, dst)  # item 0's file now holds item 1's volume
    load = LoadNpy()
    with pytest.warns(RuntimeWarning, match=f"{dst.name} rejected .it records key"):
        ds = _open(data, cache, load)
    assert load._calls == 1 and float(ds[0]["image"].max()) == 0.0
    assert_same_items(ds, fresh)


def _meta(path) -> str:
    blob = path.read_bytes()
    payload = blob[16:-4]
    n = int.from_bytes(payload[:8], "little")
    return json.loads(payload[8 : 8 + n])["__metadata__"]["fastpipe"]


def test_entry_records_its_key_index_and_sources(tmp_path):
    data, cache = write_files(tmp_path, n=3), tmp_path / "cache"
    _open(data, cache)
    records = sorted((json.loads(_meta(p)) for p in cache.glob("*.fpc")), key=lambda r: r["index"])
    assert [r["index"] for r in records] == [0, 1, 2]
    assert [r["sources"] for r in records] == [[d["image"]] for d in data]
    assert {f"{r['key']}.fpc" for r in records} == {p.name for p in cache.glob("*.fpc")}


def _typed_equal(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        a, b = a.as_subclass(torch.Tensor), b.as_subclass(torch.Tensor)
        same = torch.equal(a, b) or a.is_floating_point() and bool(torch.equal(a.isnan(), b.isnan()))
        return (
            a.dtype == b.dtype and a.shape == b.shape and same and torch.equal(a.nan_to_num(), b.nan_to_num())
        )
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, dict):
        return list(a) == list(b) and all(_typed_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_typed_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def test_entry_round_trips_tensors_and_meta_dicts_exactly():
    image = torch.arange(24, dtype=torch.float32).reshape(1, 2, 3, 4)
    entry = {
        "image": image,
        "label": torch.tensor([[True, False]]),
        "half": torch.ones(3, dtype=torch.bfloat16),
        "view": image[0, :, 1],  # a non-contiguous view: stored contiguous, equal values
        "again": image,  # the same object twice: one stored tensor
        "image_meta_dict": {
            "affine": torch.eye(4, dtype=torch.float64),
            "spatial_shape": (96, 96, 40),
            "pixdim": (1.5, 1.5, 2.0),
            "filename_or_obj": "/data/img.nii.gz",
            "nested": {"list": [1, 2.5, None, True, "s", (3, 4)], 7: "int key", None: float("nan")},
            "inf": float("-inf"),
            "dtype": torch.int16,
            "device": torch.device("cpu"),
        },
        "foreground_start_coord": np.array([17, 21, 0]),
        "spacing": np.array([1.5, 2.0], dtype=">f4"),
        "scalar": np.float32(2.5),
        "descrip": np.array(b"made by a scanner", dtype="|S80"),  # a NIfTI header field
        "names": np.array(["ab", "c"]),
    }
    got, record = decode_entry(bytearray(b"".join(encode_entry(entry, "k" * 64, 3, ["/data/img.nii.gz"]))))
    assert record == {"key": "k" * 64, "index": 3, "sources": ["/data/img.nii.gz"]}
    assert _typed_equal(got, entry)
    assert got["again"] is got["image"]


def test_payload_is_the_safetensors_layout_both_ways():
    tensors = {
        "a": torch.arange(6, dtype=torch.int16).reshape(2, 3),
        "b": torch.rand(5),
        "c": torch.zeros(0, 2),
    }
    tensors["d"] = torch.tensor([True, False])
    ours = b"".join(pack(tensors, {"k": "v"}))
    theirs = safetensors.torch.load(ours)
    assert theirs.keys() == tensors.keys() and all(torch.equal(theirs[k], tensors[k]) for k in tensors)
    back, meta = unpack(memoryview(safetensors.torch.save(tensors, metadata={"k": "v"})))
    assert meta == {"k": "v"} and all(torch.equal(back[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize(
    "value, where",
    [
        ({1, 2}, "entry['x'] is a builtins.set"),
        (object(), "entry['x'] is a builtins.object"),
        (np.array(["a"], dtype=object), "numpy object"),
        ({(1, 2): 0}, "key of type tuple"),
        # torch holds no such dtype: a TypeError escaped save() and failed the fill of a computed item
        pytest.param(
            np.ones(2, dtype=np.longdouble),
            "entry['x'] is a numpy float",
            marks=pytest.mark.skipif(
                np.dtype(np.longdouble).itemsize == 8, reason="longdouble is float64 here"
            ),
        ),
    ],
)
def test_unstorable_value_is_refused_at_write_time_naming_where(value, where):
    with pytest.raises(UnstorableEntryError, match=where.replace("[", r"\[").replace("]", r"\]")):
        encode_entry({"image": torch.zeros(2), "x": value}, "k" * 64, 0, [])


def test_writing_does_not_copy_tensor_bytes():
    image = torch.rand(1000)
    chunks = encode_entry({"image": image}, "k" * 64, 0, [])
    views = [c for c in chunks if isinstance(c, memoryview) and c.nbytes == image.numel() * 4]
    assert len(views) == 1 and np.frombuffer(views[0], dtype=np.uint8).ctypes.data == image.data_ptr()


class _TaggedTensor(torch.Tensor):
    """A tensor subclass (like MONAI's MetaTensor): its extra state would be lost, so it is not stored."""


class _WithSubclass:
    def __call__(self, d: dict) -> dict:
        return {**d, "image": torch.zeros(2).as_subclass(_TaggedTensor)}


def test_unstorable_entry_warns_once_and_stays_in_memory(tmp_path):
    data, cache = write_files(tmp_path, n=3), tmp_path / "cache"
    with pytest.warns(RuntimeWarning, match="_TaggedTensor, which the format does not store") as record:
        ds = CacheDataset(data, [_WithSubclass()], progress=False, persist_dir=cache, num_workers=1)
    assert sum("not saved" in str(w.message) for w in record) == 1
    assert type(ds[0]["image"]) is _TaggedTensor and ds.stats()["persist"]["unsaved"] == 3
    assert list(cache.glob("*.fpc")) == []


def _payload_with_header(header: dict) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + bytes(8)


DAMAGES = {
    "bad json": ({"0": torch.zeros(2)}, "{not json"),
    "missing tensor": ({"0": torch.zeros(2)}, {"$tensor": "7"}),
    "object dtype": ({"0": torch.zeros(2)}, {"$ndarray": "0", "dtype": "O"}),
    "extra key": ({"0": torch.zeros(2)}, {"$tuple": [], "$eval": "x"}),
}
HEADERS = {
    "offsets past the end": {"0": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
    "shape and offsets disagree": {"0": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
    "negative dim": {"0": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
    "unknown dtype": {"0": {"dtype": "OBJ", "shape": [2], "data_offsets": [0, 8]}},
    "not a map": [1, 2],
}


@pytest.mark.parametrize("damage", [*DAMAGES, *HEADERS])
def test_decode_rejects_inconsistent_payloads(damage):
    if damage in HEADERS:
        payload = _payload_with_header(HEADERS[damage])
    else:
        tensors, tree = DAMAGES[damage]
        doc = {"format": 2, "key": "k", "index": 0, "sources": [], "tree": tree}
        meta = tree if isinstance(tree, str) else json.dumps(doc)
        payload = safetensors.torch.save(tensors, metadata={"fastpipe": meta})
    with pytest.raises(CorruptEntryError):
        decode_entry(_envelope(b"FPCACHE2", payload))


def test_monai_metatensor_entries_round_trip_with_meta_and_applied_operations(tmp_path):
    monai_transforms = pytest.importorskip("monai.transforms")
    from fastpipe.datasets import load_decathlon_datalist, synthesize

    data = load_decathlon_datalist(
        synthesize(tmp_path / "d", preset="spleen-tiny", num_volumes=1, progress=False)
    )
    keys = ["image", "label"]
    chain = [
        monai_transforms.LoadImaged(keys),
        monai_transforms.EnsureChannelFirstd(keys),
        monai_transforms.Orientationd(keys, axcodes="RAS", labels=None),
        monai_transforms.Spacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
        monai_transforms.FgBgToIndicesd("label"),
    ]
    first = CacheDataset(
        data, chain, progress=False, persist_dir=tmp_path / "c", num_workers=1, translate=False
    )
    again = CacheDataset(
        data, chain, progress=False, persist_dir=tmp_path / "c", num_workers=1, translate=False
    )
    assert first.stats()["persist"]["saves"] == 1 and again.stats()["persist"]["loads"] == 1
    a, b = first.cached_entry(0), again.cached_entry(0)
    assert a.keys() == b.keys() and type(b["image"]).__name__ == "MetaTensor"
    for k in a:
        assert _typed_equal(a[k], b[k]), k
        if hasattr(a[k], "meta"):
            assert _typed_equal(dict(a[k].meta), dict(b[k].meta)), k
            assert _typed_equal(a[k].applied_operations, b[k].applied_operations), k
            assert a[k].is_batch == b[k].is_batch


def test_flipped_bytes_under_a_valid_checksum_are_rejected_or_read_never_crash():
    entry = {"image": torch.arange(8.0), "image_meta_dict": {"affine": torch.eye(4), "pixdim": (1.5, 2.0)}}
    payload = b"".join(encode_entry(entry, "k" * 64, 0, ["/a"])[1:-1])
    rng = np.random.default_rng(0)
    outcomes = {"read": 0, "rejected": 0}
    for _ in range(400):
        damaged = bytearray(payload)
        for pos in rng.integers(0, len(damaged), size=int(rng.integers(1, 4))):
            damaged[pos] = int(rng.integers(0, 256))
        try:
            decode_entry(_envelope(b"FPCACHE2", bytes(damaged)))
            outcomes["read"] += 1  # a flip in tensor bytes or in a string: a checksum is what catches it
        except CorruptEntryError:
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 100 and sum(outcomes.values()) == 400


def test_a_loaded_monai_entry_can_be_inverted_in_a_later_run(tmp_path):
    """Applied operations record the id() of the transform that ran: a later run loading the entry
    failed to invert it ('getting the most recently applied invertible transform ... != ...'). MONAI's
    PersistentDataset resets those ids (reset_ops_id); so does the persistent cache now."""
    import nibabel as nib
    from monai import transforms as M

    aff = np.diag([-1.0, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4), aff), tmp_path / "a.nii.gz")
    data = [{"image": str(tmp_path / "a.nii.gz")}]
    for run in ("saves", "loads"):
        orient = M.Orientationd("image", axcodes="RAS")
        chain = M.Compose([M.LoadImaged("image", ensure_channel_first=True), orient])
        ds = CacheDataset(data, chain, progress=False, persist_dir=tmp_path / "c", translate=False)
        assert ds.stats()["persist"][run] == 1
        item = ds[0]
        back = orient.inverse(item)["image"]  # the second run raised RuntimeError here
        assert torch.equal(back.affine.to(torch.float64), torch.as_tensor(aff)) and back.shape == (1, 4, 4, 4)
        ds.close()
