"""Persistent-cache keys cover what determines the output: transform code and data, and file content."""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from _persist_helpers import LoadNpy, Select

from fastpipe import CacheDataset
from fastpipe.cache._fingerprint import UnfingerprintableError, chain_fingerprint, fingerprint


def _ramp(tmp_path) -> list[dict]:
    path = tmp_path / "ramp.npy"
    np.save(path, np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(1, 4, 4, 4))
    return [{"image": str(path)}]


def _select_run(data, cache, select_fn):
    return CacheDataset(
        data, [LoadNpy(), Select(select_fn)], progress=False, persist_dir=cache, num_workers=1
    )


def _above(x, t=0.0):
    return x > t


def _exceeds(t, x):
    return x > t


def _closure(t):
    return lambda x: x > t


def _default(t):
    def select(x, t=t):
        return x > t

    return select


def _kwdefault(t):
    def select(x, *, t=t):
        return x > t

    return select


PAIRS = {
    "lambda constant": (lambda x: x > 0, lambda x: x > 0.9),
    "closure cell": (_closure(0.0), _closure(0.9)),
    "default": (_default(0.0), _default(0.9)),
    "keyword default": (_kwdefault(0.0), _kwdefault(0.9)),
    "partial keyword": (functools.partial(_above, t=0.0), functools.partial(_above, t=0.9)),
    "partial argument": (functools.partial(_exceeds, 0.0), functools.partial(_exceeds, 0.9)),
}


@pytest.mark.parametrize("change", list(PAIRS))
def test_changed_select_fn_gives_a_new_key(tmp_path, change):
    first, second = PAIRS[change]
    data, cache = _ramp(tmp_path), tmp_path / "cache"
    old = _select_run(data, cache, first)
    new = _select_run(data, cache, second)
    assert torch.equal(new[0]["image"], _fresh(data, second)), "the old select_fn's output was served"
    assert not torch.equal(new[0]["image"], old[0]["image"])
    assert new.stats()["persist"]["loads"] == 0
    assert chain_fingerprint([Select(first)]) != chain_fingerprint([Select(second)])


def _fresh(data, select_fn):
    return CacheDataset(data, [LoadNpy(), Select(select_fn)], progress=False)[0]["image"]


def test_same_transforms_give_the_same_key_so_entries_are_reused(tmp_path):
    data, cache = _ramp(tmp_path), tmp_path / "cache"
    _select_run(data, cache, _closure(0.5))
    again = _select_run(data, cache, _closure(0.5))
    assert again.stats()["persist"]["loads"] == 1 and again.stats()["computed"] == 0


THRESHOLD = 0.25


def _reads_a_global(x):
    return x > THRESHOLD


def test_a_global_the_code_reads_is_part_of_the_key(monkeypatch):
    before = fingerprint(_reads_a_global)
    monkeypatch.setattr(f"{__name__}.THRESHOLD", 0.75)
    assert fingerprint(_reads_a_global) != before


def test_method_code_of_a_user_transform_is_part_of_the_key():
    class A:
        def __call__(self, d):
            return d

    class B:
        def __call__(self, d):
            return {**d, "x": 1}

    B.__qualname__ = A.__qualname__
    assert fingerprint(A()) != fingerprint(B())


def test_transform_that_cannot_be_fingerprinted_is_refused_naming_it(tmp_path):
    class Locked:
        def __init__(self):
            self.codec = zlib.compressobj()  # public, opaque: cannot tell whether it changes the output
            self.guard = threading.Lock()  # a lock is state, not a parameter: hashed by type

        def __call__(self, d):
            return d

    data = [{"image": "a"}]
    with pytest.raises(ValueError, match=r"transform 1 \(.*Locked\)\.codec is a zlib\.Compress"):
        CacheDataset(data, [lambda d: d, Locked()], progress=False, persist_dir=tmp_path / "c")
    with pytest.raises(UnfingerprintableError, match="closure codec"):
        codec = zlib.compressobj()
        fingerprint(lambda x: (codec, x))
    assert len(CacheDataset(data, [Locked()], progress=False)) == 1  # fine without a persistent cache


@pytest.mark.parametrize("persist_key", ["content", "stat"])
def test_same_size_edit_with_restored_mtime_is_seen(tmp_path, persist_key):
    data, cache = _ramp(tmp_path), tmp_path / "cache"
    path = data[0]["image"]
    kwargs = {"persist_key": "stat"} if persist_key == "stat" else {}  # "content" is the default
    old = CacheDataset(data, [LoadNpy()], progress=False, persist_dir=cache, **kwargs)
    st = os.stat(path)
    time.sleep(0.05)  # past the filesystem's timestamp granularity, as any real edit is
    np.save(path, np.full((1, 4, 4, 4), 0.5, dtype=np.float32))  # same size, other voxels
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p / rsync -a / tar x leave it
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    new = CacheDataset(data, [LoadNpy()], progress=False, persist_dir=cache, **kwargs)
    assert float(new[0]["image"].min()) == 0.5, "the old file's data was served"
    assert not torch.equal(new[0]["image"], old[0]["image"]) and new.stats()["persist"]["loads"] == 0


def test_persist_key_is_checked(tmp_path):
    with pytest.raises(ValueError, match="persist_key must be one of"):
        CacheDataset([{"x": 1}], [lambda d: d], progress=False, persist_dir=tmp_path, persist_key="mtime")


# --- settings libraries keep in private attributes, and what a first call leaves behind -----------------


MONAI_PREFIX = (  # source text, so a new process builds the very same chain
    "[M.LoadImaged('image'), M.EnsureChannelFirstd('image', channel_dim='no_channel'),"
    " M.Spacingd('image', pixdim=(2.0, 2.0, 2.0)), M.SpatialPadd('image', (8, 8, 8)),"
    " M.CropForegroundd('image', source_key='image')]"
)


def _monai_prefix():
    from monai import transforms as M

    return eval(MONAI_PREFIX, {"M": M})


def test_monai_settings_kept_in_private_attributes_change_the_key():
    from monai import transforms as M

    pairs = [
        (M.LoadImaged("image"), M.LoadImaged("image", ensure_channel_first=True)),  # in ``_loader``
        (M.LoadImaged("image"), M.LoadImaged("image", dtype=np.float16)),
        (M.Spacingd("image", pixdim=(2.0, 2.0, 2.0)), M.Spacingd("image", pixdim=(2.0, 2.0, 2.0), lazy=True)),
        (
            M.SpatialCropd("image", roi_start="a", roi_end="b"),
            M.SpatialCropd("image", roi_start="c", roi_end="d"),
        ),
    ]
    for a, b in pairs:
        assert chain_fingerprint([a]) != chain_fingerprint([b]), (a, b)


def test_a_monai_chain_keeps_its_key_after_it_ran_and_in_a_new_process(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "vol.npy"
    np.save(path, np.pad(np.ones((4, 4, 4), np.float32), 2))
    chain = _monai_prefix()
    before = chain_fingerprint(chain)
    d = {"image": str(path)}
    for t in chain:  # readers remember the file, transforms make thread-local state on first use
        d = t(d)
    assert chain_fingerprint(chain) == before
    code = (
        "import sys; from monai import transforms as M; from fastpipe.cache._fingerprint import "
        "chain_fingerprint; print(chain_fingerprint(eval(sys.argv[1], {'M': M})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, MONAI_PREFIX], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == before


def test_private_parts_that_cannot_be_hashed_stand_for_their_type():
    class Codec:
        def __init__(self, level):
            self._codec = zlib.compressobj()  # private and opaque: its type only, the chain is not refused
            self._level = level  # private and plain: hashed

        def __call__(self, d):
            return d

    assert fingerprint(Codec(1)) == fingerprint(Codec(1)) != fingerprint(Codec(2))


# --- what an item's path names -----------------------------------------------------------------------


def test_a_home_relative_path_is_keyed_by_the_file_it_names(tmp_path, monkeypatch):
    from fastpipe.cache._key import entry_owner

    monkeypatch.setenv("HOME", str(tmp_path))
    np.save(tmp_path / "vol.npy", np.zeros(4, np.float32))
    first = entry_owner({"image": "~/vol.npy"}, 0, "chain", "v")
    np.save(tmp_path / "vol.npy", np.ones(4, np.float32))
    second = entry_owner({"image": "~/vol.npy"}, 0, "chain", "v")
    assert first.key != second.key and second.sources == (str(tmp_path / "vol.npy"),)


@pytest.mark.parametrize("persist_key", ["content", "stat"])
def test_a_folder_is_keyed_by_every_file_in_it(tmp_path, persist_key):
    from fastpipe.cache._key import item_key

    series = tmp_path / "series"
    (series / "sub").mkdir(parents=True)
    for i in range(3):
        (series / f"{i}.dcm").write_bytes(bytes([i]) * 10)

    def key():
        return item_key({"image": str(series)}, "chain", "v", persist_key)

    keys = [key()]
    (series / "1.dcm").write_bytes(b"\xff" * 10)  # same size
    os.utime(series / "1.dcm", ns=(1, 1)) if persist_key == "content" else time.sleep(0.01)
    keys.append(key())
    (series / "sub" / "extra.dcm").write_bytes(b"x")
    keys.append(key())
    (series / "0.dcm").rename(series / "9.dcm")
    keys.append(key())
    assert len(set(keys)) == 4 and key() == keys[-1]


# --- what code reads through a module of your own, a cache decorator, a library object ----------------


def test_a_value_read_through_a_module_of_your_own_is_part_of_the_key(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "my_helpers.py").write_text("SCALE = 2.0\n\ndef normalize(x):\n    return x * SCALE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    helpers = importlib.import_module("my_helpers")
    try:
        fn = lambda x: helpers.normalize(x)  # noqa: E731
        before = fingerprint(fn)
        monkeypatch.setattr(helpers, "SCALE", 3.0)
        assert fingerprint(fn) != before
        monkeypatch.setattr(helpers, "SCALE", 2.0)
        assert fingerprint(fn) == before
    finally:
        sys.modules.pop("my_helpers", None)


def test_an_lru_cache_function_is_keyed_by_the_function_it_wraps():
    @functools.lru_cache
    def double(x):
        return x * 2

    @functools.lru_cache
    def triple(x):
        return x * 3

    assert fingerprint(double) != fingerprint(triple)


def test_a_library_object_the_code_reads_is_keyed_by_its_settings(monkeypatch):
    from monai.transforms import ScaleIntensityRange

    monkeypatch.setitem(globals(), "_WINDOW", ScaleIntensityRange(0, 200, 0.0, 1.0))
    fn = lambda x: _WINDOW(x)  # noqa: E731, F821
    before = fingerprint(fn)
    monkeypatch.setitem(globals(), "_WINDOW", ScaleIntensityRange(0, 400, 0.0, 1.0))
    assert fingerprint(fn) != before


def test_a_file_replaced_while_it_is_read_stores_no_entry_under_its_old_key(tmp_path, monkeypatch):
    import fastpipe.cache._core as core

    path, cache = tmp_path / "v.npy", tmp_path / "cache"
    np.save(path, np.zeros((1, 2, 2, 2), np.float32))
    real, keys = core.entry_owner, []

    def swapped_after_the_key(*args, **kwargs):  # another process replaces the file right then
        owner = real(*args, **kwargs)
        if not keys:
            np.save(path, np.ones((1, 2, 2, 2), np.float32))
        keys.append(owner.key)
        return owner

    monkeypatch.setattr(core, "entry_owner", swapped_after_the_key)
    with pytest.warns(RuntimeWarning, match="changed while it was read"):
        first = CacheDataset([{"image": str(path)}], [LoadNpy()], progress=False, persist_dir=cache)
    assert float(first[0]["image"].mean()) == 1.0 and keys[0] != keys[1]
    monkeypatch.undo()
    np.save(path, np.zeros((1, 2, 2, 2), np.float32))  # the old content comes back
    again = CacheDataset([{"image": str(path)}], [LoadNpy()], progress=False, persist_dir=cache)
    assert float(again[0]["image"].mean()) == 0.0 and again.stats()["persist"]["loads"] == 0


def test_private_class_level_data_of_a_user_transform_is_part_of_the_key(tmp_path):
    class Scale:
        _FACTOR = 2.0  # a setting kept at class level under a private name

        def __call__(self, d):
            return {**d, "image": d["image"] * self._FACTOR}

    data = _ramp(tmp_path)
    first = CacheDataset(
        data, [LoadNpy(), Scale()], progress=False, persist_dir=tmp_path / "c", num_workers=1
    )
    Scale._FACTOR = 3.0
    second = CacheDataset(
        data, [LoadNpy(), Scale()], progress=False, persist_dir=tmp_path / "c", num_workers=1
    )
    assert second.core.persist.stats()["loads"] == 0
    assert torch.allclose(second[0]["image"], first[0]["image"] * 1.5)


def test_a_metatensor_s_affine_is_part_of_the_key():
    from monai.data import MetaTensor

    from fastpipe.cache._key import item_key

    def volume(spacing):
        return MetaTensor(
            torch.zeros(1, 2, 2, 2), affine=torch.diag(torch.tensor([spacing, spacing, spacing, 1.0]))
        )

    assert fingerprint(volume(1.0)) == fingerprint(volume(1.0)) != fingerprint(volume(2.0))
    assert item_key({"image": volume(1.0)}, "chain", "v") != item_key({"image": volume(2.0)}, "chain", "v")


@pytest.mark.parametrize("package", ["torch", "monai", "nibabel"])
def test_torch_monai_and_a_kept_reader_s_package_versions_are_part_of_the_key(monkeypatch, package):
    import importlib

    from monai import transforms as M

    module = importlib.import_module(package)
    chain = [M.LoadImaged("image", reader="NibabelReader"), M.ScaleIntensityd("image")]
    before = chain_fingerprint(chain)
    monkeypatch.setattr(module, "__version__", "99.0.0")  # an upgrade that changes decoded values
    assert chain_fingerprint(chain) != before


def test_a_monai_or_nibabel_upgrade_keeps_the_key_of_a_chain_without_them(monkeypatch):
    import monai
    import nibabel

    chain = [LoadNpy()]
    before = chain_fingerprint(chain)
    monkeypatch.setattr(monai, "__version__", "99.0.0")
    monkeypatch.setattr(nibabel, "__version__", "99.0.0")
    assert chain_fingerprint(chain) == before


def test_a_tuple_and_a_list_item_value_are_keyed_apart(tmp_path, recwarn):
    data = _ramp(tmp_path)

    def kind(d):
        return {**d, "kind": type(d["roi"]).__name__}

    runs = {}
    for roi in ([1, 2], (1, 2), (1, 2)):
        item = [{**data[0], "roi": roi}]
        ds = CacheDataset(item, [LoadNpy(), kind], progress=False, persist_dir=tmp_path / "c", num_workers=1)
        runs.setdefault(type(roi).__name__, []).append((ds[0]["roi"], ds[0]["kind"], ds.stats()["persist"]))
    assert [r[:2] for r in runs["list"]] == [([1, 2], "list")]
    assert [r[:2] for r in runs["tuple"]] == [((1, 2), "tuple")] * 2  # computed, then read back as a tuple
    assert runs["tuple"][0][2]["loads"] == 0 and runs["tuple"][1][2]["loads"] == 1
    assert not [w for w in recwarn if "changed while it was read" in str(w.message)]


def test_a_nibabel_upgrade_changes_the_key_of_fastpipe_s_nifti_loader(monkeypatch):
    import nibabel

    from fastpipe.transforms import LoadImaged

    chain = [LoadImaged("image")]  # parses NIfTI headers with nibabel (get_best_affine, get_zooms)
    before = chain_fingerprint(chain)
    monkeypatch.setattr(nibabel, "__version__", "99.0.0")
    assert chain_fingerprint(chain) != before


@pytest.mark.parametrize("persist_key", ["content", "stat"])
def test_the_data_file_of_a_two_file_image_keys_the_item(tmp_path, persist_key):
    """A NIfTI pair (.hdr + .img) or a MetaImage .mhd + .raw: the item names the header, a reader reads
    the data file too. New voxels in the data file left the key as it was: the old entry was served."""
    import nibabel as nib

    from fastpipe.cache._key import item_key

    def write_pair(value: float) -> None:
        nib.save(nib.Nifti1Pair(np.full((3, 3, 3), value, np.float32), np.eye(4)), tmp_path / "scan.hdr")

    (tmp_path / "vol.mhd").write_bytes(b"ObjectType = Image\r\nNDims = 1\r\nElementDataFile = vol.raw\r\n")
    items = [{"image": str(tmp_path / "scan.hdr")}, {"image": str(tmp_path / "vol.mhd")}]
    write_pair(1.0)
    (tmp_path / "vol.raw").write_bytes(b"\0\0\0\0")
    before = [item_key(item, "chain", "v", persist_key) for item in items]
    header = (tmp_path / "scan.hdr").read_bytes()
    time.sleep(0.01)
    write_pair(7.0)
    (tmp_path / "vol.raw").write_bytes(b"\0\0\0\1")
    assert (tmp_path / "scan.hdr").read_bytes() == header  # only the data files changed
    after = [item_key(item, "chain", "v", persist_key) for item in items]
    assert before[0] != after[0] and before[1] != after[1]


def test_a_script_that_sets_a_version_is_still_hashed_by_its_code(monkeypatch):
    """A training script with ``__version__ = "1.0"`` counted as a library: its lambdas were keyed by
    that version only, so editing one (``* 2`` to ``* 3``) kept the key and served the old entries."""
    import sys

    monkeypatch.setattr(sys.modules["__main__"], "__version__", "1.0", raising=False)
    twice, thrice = (lambda d: {**d, "x": d["x"] * 2}), (lambda d: {**d, "x": d["x"] * 3})
    for fn in (twice, thrice):
        fn.__module__ = "__main__"  # as defined in the script being run
    assert chain_fingerprint([twice]) != chain_fingerprint([thrice])


def test_a_module_of_your_own_named_like_the_standard_librarys_is_hashed_by_its_code(tmp_path, monkeypatch):
    """A user's ``profile.py`` (first on the path) counted as the standard library: its functions were
    keyed by the Python version only, so an edit of what they compute kept the key (stale entries)."""
    import sys
    import types

    own = types.ModuleType("profile")
    own.__file__ = str(tmp_path / "profile.py")
    exec("SCALE = 2.0\ndef scale(d):\n    return {**d, 'x': d['x'] * SCALE}\n", own.__dict__)
    monkeypatch.setitem(sys.modules, "profile", own)
    before = chain_fingerprint([own.scale])
    own.SCALE = 3.0
    assert chain_fingerprint([own.scale]) != before
    assert chain_fingerprint([os.path.join]) == chain_fingerprint(
        [os.path.join]
    )  # the real stdlib: by version


@pytest.mark.parametrize("persist_key", ["content", "stat"])
@pytest.mark.parametrize(
    ("header", "text"),
    [
        (
            "list.mhd",
            b"NDims = 3\nDimSize = 2 2 3\nElementDataFile = LIST 2D\ns0.raw\r\nsub/s1.raw\ns2.raw\n",
        ),
        ("pattern.mhd", b"NDims = 3\nDimSize = 2 2 3\nElementDataFile = sub/s%d.raw 0 2 1\n"),
        (
            "list.nhdr",
            b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 3\ndata file: LIST 2\ns0.raw\nsub/s1.raw\n",
        ),
        (
            "pattern.nhdr",
            b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 3\ndatafile: sub/s%01d.raw 0 2 1 2\n",
        ),
        ("attached.mha", b"NDims = 3\nElementDataFile = sub/s1.raw\n"),
    ],
    ids=["mhd-list", "mhd-pattern", "nhdr-list", "nhdr-pattern", "mha-subfolder"],
)
def test_every_slice_file_a_header_lists_keys_the_item(tmp_path, persist_key, header, text):
    """A MetaImage ``ElementDataFile = LIST`` or file pattern, an NRRD ``data file: LIST`` or pattern:
    the reader reads one file per slice, but the key followed none of them, so a rewritten slice kept
    the key and the old entry was served."""
    from fastpipe.cache._key import item_key

    (tmp_path / "sub").mkdir()
    for name in ("s0.raw", "sub/s1.raw", "s2.raw", "sub/s0.raw", "sub/s2.raw"):
        (tmp_path / name).write_bytes(b"\0\0\0\0")
    (tmp_path / header).write_bytes(text)
    item = {"image": str(tmp_path / header)}
    before = item_key(item, "chain", "v", persist_key)
    time.sleep(0.01)
    (tmp_path / "sub/s1.raw").write_bytes(b"\0\0\0\1")
    assert item_key(item, "chain", "v", persist_key) != before


def test_a_user_transform_with_an_inner_attribute_is_keyed_by_its_own_parameters():
    """Any transform with an ``.inner`` attribute was keyed as that inner transform alone (meant for the
    profiling wrapper), so a wrapper's own parameter (``factor``) or code could change and the old
    entries were served; only fastpipe's profiling wrapper is looked through."""
    from fastpipe.profiling.nvtx_ranges import ProfiledTransform

    class Scaled:
        def __init__(self, inner, factor):
            self.inner, self.factor = inner, factor

        def __call__(self, d):
            return {k: v * self.factor for k, v in self.inner(d).items()}

    def ident(d):
        return d

    assert chain_fingerprint([Scaled(ident, 2)]) != chain_fingerprint([Scaled(ident, 3)])
    assert chain_fingerprint([Scaled(ident, 2)]) != chain_fingerprint([ident])
    assert chain_fingerprint([ProfiledTransform(Scaled(ident, 2))]) == chain_fingerprint([Scaled(ident, 2)])


def test_item_keys_of_other_types_but_the_same_text_key_apart():
    """The item's dict keys entered its key as text, so ``{1: "a"}`` and ``{"1": "a"}`` (which a transform
    reads apart: ``d[1]`` is not ``d["1"]``) shared one key, and one's entry was served to the other."""
    from fastpipe.cache._key import item_key

    assert item_key({1: "a"}, "chain", "v") != item_key({"1": "a"}, "chain", "v")
    assert item_key({None: "a"}, "chain", "v") != item_key({"None": "a"}, "chain", "v")
    assert item_key({"a": "x", "b": "y"}, "chain", "v") == item_key({"b": "y", "a": "x"}, "chain", "v")


def test_an_item_value_that_cannot_be_keyed_is_named_with_its_place_in_the_item(tmp_path):
    """The fill failed with 'item value is a zlib.Compress ...': neither which value of the item nor that
    the persistent cache (not the chain) needed it; the message now names ``item['meta'][1]`` and persist_dir."""
    data = [{"image": "a", "meta": [1, zlib.compressobj()]}]
    with pytest.raises(
        ValueError, match=r"persistent cache: item\['meta'\]\[1\] is a zlib\.Compress.*persist_dir"
    ):
        CacheDataset(data, [lambda d: d], progress=False, persist_dir=tmp_path / "c")
    assert len(CacheDataset(data, [lambda d: d], progress=False)) == 1  # fine without a persistent cache


def test_the_value_of_an_enum_of_your_own_is_part_of_the_key():
    """An enum member was keyed by its name alone: editing a user enum's value (a window
    ``SOFT = (-160, 240)`` made ``(-150, 250)``) kept the key, and the entries of the old window were served."""
    import enum

    def window(lo, hi):
        class Window(enum.Enum):
            SOFT = (lo, hi)

        Window.__module__ = "__main__"  # as defined in the training script
        return Window.SOFT

    assert fingerprint(window(-160, 240)) != fingerprint(window(-150, 250))
    assert fingerprint(window(-160, 240)) == fingerprint(window(-160, 240))


def test_the_version_of_a_library_class_a_transform_of_yours_inherits_from_is_part_of_the_key(monkeypatch):
    """A class of your own deriving from a MONAI transform (``class MyCast(CastToType): pass``) runs
    MONAI's inherited ``__call__``, but only its own code was hashed: a MONAI upgrade kept the key and the
    entries the old MONAI computed were served."""
    import monai
    from monai.transforms import CastToType

    class MyCast(CastToType):
        pass

    MyCast.__module__ = "__main__"  # as defined in the training script
    before = chain_fingerprint([MyCast(torch.float16)])
    monkeypatch.setattr(monai, "__version__", "99.0.0")
    assert chain_fingerprint([MyCast(torch.float16)]) != before


@pytest.mark.parametrize("persist_key", ["content", "stat"])
def test_a_dangling_link_in_a_series_folder_keys_the_item_instead_of_failing_it(tmp_path, persist_key):
    """A broken symbolic link among a DICOM series' files (a slice moved away) failed the fill with
    FileNotFoundError under persist_dir alone, though ITK's series reader skips it; it now keys as
    unreadable, and the key changes when the link's target comes back."""
    from fastpipe.cache._key import item_key

    series = tmp_path / "series"
    series.mkdir()
    (series / "0.dcm").write_bytes(b"slice")
    (series / "1.dcm").symlink_to(tmp_path / "moved.dcm")
    before = item_key({"image": str(series)}, "chain", "v", persist_key)
    (tmp_path / "moved.dcm").write_bytes(b"slice 1")
    assert item_key({"image": str(series)}, "chain", "v", persist_key) != before


def test_a_container_subclass_is_keyed_by_its_class_and_attributes():
    """A dict or list of a subclass was keyed by its items alone: a ``defaultdict``'s default factory, or
    the code of a ``class Lut(dict)`` of your own whose ``lookup`` a transform calls, could change and
    the entries computed with the old ones were served."""
    from collections import defaultdict

    def lut(default):
        class Lut(dict):
            def lookup(self, k):
                return self.get(k, default)

        Lut.__module__ = "__main__"  # as defined in the training script
        return Lut({1: 2})

    assert fingerprint(defaultdict(lambda: 0, {1: 2})) != fingerprint(defaultdict(lambda: 255, {1: 2}))
    assert fingerprint(lut(0)) != fingerprint(lut(255))
    assert fingerprint(lut(0)) == fingerprint(lut(0))


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_a_folder_name_that_is_not_utf8_keys_and_reloads(tmp_path):
    """A latin-1 folder name (``os.fsdecode`` gives lone surrogates) failed the fill with
    UnicodeEncodeError in the key; MONAI's PersistentDataset takes such paths."""
    folder = os.path.join(os.fsdecode(bytes(tmp_path)), os.fsdecode(b"\xff dir"))
    os.makedirs(folder)
    path = os.path.join(folder, "img.npy")
    np.save(path, np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    cache = os.path.join(folder, "cache")
    first = CacheDataset([{"image": path}], [LoadNpy()], progress=False, persist_dir=cache)
    again = CacheDataset([{"image": path}], [LoadNpy()], progress=False, persist_dir=cache)
    assert torch.equal(again[0]["image"], first[0]["image"]) and again.stats()["persist"]["loads"] == 1
