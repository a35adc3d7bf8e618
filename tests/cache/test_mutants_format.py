"""Persistent-cache entry format: behaviour that mutation testing found unchecked (``fastpipe.cache._format``)."""

from __future__ import annotations

import enum
import json
import zlib

import numpy as np
import pytest
import safetensors.torch
import torch

from fastpipe.cache._format import (
    FORMAT,
    MAGIC,
    CorruptEntryError,
    UnstorableEntryError,
    decode_entry,
    encode_entry,
)


def _file(tree, tensors=None) -> bytes:
    """An entry file with a valid magic, length and checksum around ``tree`` (crafted, not encoded)."""
    doc = {"format": FORMAT, "key": "k", "index": 0, "sources": [], "tree": tree}
    payload = safetensors.torch.save(tensors or {"0": torch.zeros(1)}, metadata={"fastpipe": json.dumps(doc)})
    return MAGIC + len(payload).to_bytes(8, "little") + payload + zlib.crc32(payload).to_bytes(4, "little")


def test_a_crafted_file_decodes_as_written():
    """The helper's files are valid: what the tests below damage is the tree alone."""
    entry, record = decode_entry(_file({"$dict": [["a", 1]]}))
    assert entry == {"a": 1} and record == {"key": "k", "index": 0, "sources": []}
    assert decode_entry(b"".join(bytes(p) for p in encode_entry({"a": 1}, "k", 0, [])))[0] == {"a": 1}


@pytest.mark.parametrize("item", ["ab", ["a"], ["a", 1, 2], {"a": 1}])
def test_a_dict_item_that_is_not_a_key_value_pair_is_rejected(item):
    with pytest.raises(CorruptEntryError, match="bad dict item"):
        decode_entry(_file({"$dict": [item]}))


@pytest.mark.parametrize("shape", [[-1], [True], [2.0], 2])
def test_a_string_array_with_a_bad_shape_is_rejected(shape):
    data = torch.frombuffer(bytearray(np.array([b"ab", b"cd"]).tobytes()), dtype=torch.uint8)
    good = {"$npbytes": "0", "dtype": "|S2", "shape": [2], "scalar": False}
    assert decode_entry(_file(good, {"0": data}))[0].tolist() == [b"ab", b"cd"]
    with pytest.raises(CorruptEntryError):
        decode_entry(_file({**good, "shape": shape}, {"0": data}))


class _Color(enum.Enum):
    RED = "red"


def test_only_monai_enums_are_stored_as_dict_keys_and_another_enum_key_is_named_as_a_key():
    from monai.utils.enums import SpaceKeys

    blob = b"".join(bytes(p) for p in encode_entry({"meta": {SpaceKeys.RAS: 1}}, "k", 0, []))
    assert decode_entry(blob)[0] == {"meta": {SpaceKeys.RAS: 1}}
    with pytest.raises(UnstorableEntryError, match=r"entry\['meta'\] has a key of type _Color"):
        encode_entry({"meta": {_Color.RED: 1}}, "k", 0, [])


def test_a_sparse_tensor_is_refused_at_write_time_naming_where():
    with pytest.raises(
        UnstorableEntryError, match=r"entry\['x'\] is a torch.sparse_coo tensor \(dense tensors only\)"
    ):
        encode_entry({"x": torch.eye(2).to_sparse()}, "k", 0, [])


@pytest.mark.parametrize("size", [0, 8, 12, 19])
def test_a_file_shorter_than_magic_length_and_checksum_is_named_not_an_entry(size):
    with pytest.raises(CorruptEntryError, match="another format, or truncated"):
        decode_entry((MAGIC + bytes(16))[:size])
