"""Fingerprints of transforms: behaviour that mutation testing found unchecked (``fastpipe.cache._fingerprint*``)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from fastpipe.cache._fingerprint import MAX_DEPTH, MAX_NODES, UnfingerprintableError, fingerprint


def _nested(levels: int) -> list:
    x: list | int = 0
    for _ in range(levels):
        x = [x]
    return x


def test_nesting_up_to_max_depth_is_hashed_and_one_level_more_is_refused_naming_the_path():
    assert fingerprint(_nested(MAX_DEPTH)) != fingerprint(_nested(MAX_DEPTH - 1))
    with pytest.raises(
        UnfingerprintableError, match=rf"transform 0(\[0\]){{{MAX_DEPTH + 1}}}: nested deeper than"
    ):
        fingerprint(_nested(MAX_DEPTH + 1), "transform 0")


def test_more_parts_than_max_nodes_are_refused_in_a_list_and_in_a_set():
    """The part count runs over sub-walks too (set items, dict keys), so neither escapes the bound."""
    for big in (list(range(MAX_NODES + 1)), set(range(MAX_NODES + 1)), dict.fromkeys(range(MAX_NODES + 1))):
        with pytest.raises(UnfingerprintableError, match=f"more than {MAX_NODES} parts"):
            fingerprint(big)


class _Int(int):
    pass


class _Str(str):
    pass


def test_a_subclass_of_a_plain_type_is_hashed_by_its_value():
    assert fingerprint(_Int(1)) != fingerprint(_Int(2))
    assert fingerprint(_Str("a")) != fingerprint(_Str("b"))
    assert fingerprint(_Int(1)) != fingerprint(1)  # and by its class


def test_an_object_array_is_hashed_by_its_items():
    a = np.array(["a", 1], dtype=object)
    assert fingerprint(a) != fingerprint(np.array(["b", 1], dtype=object))
    # equal items that are other objects (not their addresses) give the same fingerprint
    big = [int("1" * 30), int("1" * 30)]
    assert big[0] is not big[1]
    assert fingerprint(np.array([big[0], "a"], dtype=object)) == fingerprint(
        np.array([big[1], "a"], dtype=object)
    )


class _Slots:
    __slots__ = ("threshold", "_cache")

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold


class _OneSlot:
    __slots__ = "threshold"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold


def test_public_slot_attributes_enter_the_fingerprint_as_a_tuple_or_a_single_name():
    assert fingerprint(_Slots(0.5)) != fingerprint(_Slots(0.7))
    assert fingerprint(_OneSlot(0.5)) != fingerprint(_OneSlot(0.7))
    assert fingerprint(_Slots(0.5)) == fingerprint(_Slots(0.5))


class _Guarded:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.lock = threading.Lock()  # public, but state: two instances with other locks key alike
        self.log = logging.getLogger("fastpipe.test")


def test_public_locks_and_loggers_stand_for_their_type_only():
    assert fingerprint(_Guarded(0.5)) == fingerprint(_Guarded(0.5))
    assert fingerprint(_Guarded(0.5)) != fingerprint(_Guarded(0.7))


class _Files:
    def __init__(self, filenames: tuple[str, ...]) -> None:
        self.filenames = filenames


def test_only_a_monai_reader_drops_its_per_call_filenames():
    from monai.data.image_reader import NibabelReader

    reader = NibabelReader()
    before = fingerprint(reader)
    reader.filenames = ("last_read.nii.gz",)  # set by every read: not a parameter
    assert fingerprint(reader) == before
    assert fingerprint(_Files(("a.nii.gz",))) != fingerprint(_Files(("b.nii.gz",)))  # yours is one


def test_temporaries_walked_one_after_another_are_not_taken_for_one_object():
    """Each object array is walked through a temporary ``tolist()``: a freed one's id comes back for the
    next, and only keeping them alive for the walk stops the second from hashing as a back reference."""

    def arr(s: str) -> np.ndarray:
        return np.array([s], dtype=object)

    assert fingerprint([arr("a"), arr("b")]) != fingerprint([arr("a"), arr("a")])
    assert fingerprint([arr("a"), arr("b"), arr("c")]) != fingerprint([arr("a"), arr("b"), arr("b")])


def test_dict_keys_lists_and_tuples_and_module_weights_enter_the_fingerprint():
    assert fingerprint({"a": 1}) != fingerprint({"b": 1})
    assert fingerprint({1: "x"}) != fingerprint({"1": "x"})
    assert fingerprint([1, 2]) != fingerprint((1, 2))
    torch.manual_seed(0)
    one, two = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert fingerprint(one) != fingerprint(two)  # other weights, same class and attributes
    two.load_state_dict(one.state_dict())
    assert fingerprint(one) == fingerprint(two)


def test_a_builtin_method_bound_to_an_object_is_hashed_with_the_object():
    assert fingerprint({"a": 1}.get) != fingerprint({"a": 2}.get)
    assert fingerprint({"a": 1}.get) == fingerprint({"a": 1}.get)


def test_a_metatensor_is_hashed_with_its_meta_and_applied_operations():
    from monai.data import MetaTensor

    def tensor(op: int, x: int = 1) -> MetaTensor:
        t = MetaTensor(torch.zeros(2), meta={"x": x})
        t.applied_operations = [{"op": op}]
        return t

    assert fingerprint(tensor(1)) == fingerprint(tensor(1))
    assert fingerprint(tensor(1)) != fingerprint(tensor(2))
    assert fingerprint(tensor(1)) != fingerprint(tensor(1, x=2))
