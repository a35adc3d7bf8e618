"""Errors for a bad item: the cause's type stays catchable, and the message names the file that failed."""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _cache_helpers import CountingDet, items  # noqa: E402

from fastpipe import CacheDataset, SmartCacheDataset, ThreadDataLoader
from fastpipe.cache._item_errors import failed_file
from fastpipe.cache.errors import CacheFillError, ItemError, ReplacementError, TransformError, item_error
from fastpipe.transforms import LoadImaged, mark_random


def write_pair(folder: Path, name: str) -> dict:
    """A tiny int16 image and uint8 label as ``.nii.gz``: the item naming them."""
    item = {}
    for key, dtype in (("image", np.int16), ("label", np.uint8)):
        path = folder / f"{key}_{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((8, 8, 4), dtype), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
        item[key] = str(path)
    return item


def failing(exc: BaseException, on: int = 2):
    def transform(d: dict) -> dict:
        if d["x"] == on:
            raise exc
        return {**d, "image": torch.full((1, 2, 2, 2), float(d["x"]))}

    return transform


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "exc", [ValueError("bad dims"), TypeError("bad dtype"), FileNotFoundError(2, "No such file", "/d/x.nii")]
)
def test_fill_error_is_also_the_cause_type(exc, workers):
    with pytest.raises(type(exc)) as info:  # a user's `except ValueError` keeps working
        CacheDataset(items(4), [failing(exc)], progress=False, num_workers=workers)
    err = info.value
    assert isinstance(err, CacheFillError) and isinstance(err, RuntimeError)
    assert err.__cause__ is exc and err.index == 2 and "item 2" in str(err)
    assert type(err).__name__ == "CacheFillError"  # tracebacks and logs read as before


def test_replacement_error_is_also_the_cause_type():
    data = [{"x": i, "path": f"/data/img{i}.nii.gz"} for i in range(8)]
    ds = SmartCacheDataset(
        data,
        failing(ValueError("corrupt"), on=5),
        cache_num=4,
        replace_rate=0.5,
        shuffle=False,
        progress=False,
        num_init_workers=1,
    )
    with ds, pytest.raises(ValueError, match=r"item 5 \(/data/img5.nii.gz\).*corrupt") as info:
        ds.update_cache()
    assert isinstance(info.value, ReplacementError) and info.value.index == 5


def test_combined_errors_pickle_and_keep_their_fields():
    err = item_error(CacheFillError, "cache fill failed on item 3", KeyError("k"), index=3, file="/d/a.nii")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and isinstance(back, KeyError) and isinstance(back, CacheFillError)
    assert str(back) == "cache fill failed on item 3" and back.index == 3 and back.file == "/d/a.nii"
    code = (  # another process rebuilds the class from its bases (e.g. a DataLoader worker's error)
        "import pickle, sys; e = pickle.loads(sys.stdin.buffer.read()); "
        "from fastpipe.cache.errors import CacheFillError; "
        "assert isinstance(e, KeyError) and isinstance(e, CacheFillError), type(e); print(e.index)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(err), capture_output=True, check=True
    )
    assert out.stdout.strip() == b"3"


def test_errors_that_would_end_a_loop_are_not_mixed_in():
    stop = item_error(TransformError, "m", StopIteration())
    assert not isinstance(stop, StopIteration)  # would end a `for` loop silently
    index = item_error(TransformError, "m", IndexError("i"))
    assert not isinstance(index, IndexError)  # would end `for x in dataset` as if the data were over
    assert isinstance(item_error(CacheFillError, "m", IndexError("i")), IndexError)  # a fill is no loop
    assert type(item_error(CacheFillError, "m", ValueError())) is type(
        item_error(CacheFillError, "n", ValueError())
    )
    assert isinstance(item_error(TransformError, "m", item_error(CacheFillError, "n", OSError())), OSError)


def test_broken_label_is_reported_against_the_label(tmp_path):
    good, item = write_pair(tmp_path, "good"), write_pair(tmp_path, "bad")
    raw = Path(item["label"]).read_bytes()
    Path(item["label"]).write_bytes(gzip.compress(gzip.decompress(raw)[:-40]))  # label cut short
    with pytest.raises(ValueError) as info:
        CacheDataset([good, item], [LoadImaged(["image", "label"])], progress=False, num_workers=1)
    err = info.value
    assert isinstance(err, CacheFillError) and err.index == 1
    assert f"item 1 ({item['label']}, key 'label')" in str(err), str(err)
    assert err.file == item["label"] and err.key == "label"


def test_msd_layout_names_the_image_that_failed_not_the_label_of_the_same_name(tmp_path):
    """imagesTr/x.nii.gz and labelsTr/x.nii.gz share a file name but are two files."""
    item = {}
    for key, folder in (("image", "imagesTr"), ("label", "labelsTr")):
        (tmp_path / folder).mkdir()
        pair = write_pair(tmp_path / folder, "spleen_2")
        item[key] = str(Path(pair[key]).rename(tmp_path / folder / "spleen_2.nii.gz"))
    raw = Path(item["image"]).read_bytes()
    Path(item["image"]).write_bytes(gzip.compress(gzip.decompress(raw)[:-40]))  # image cut short
    with pytest.raises(ValueError) as info:
        CacheDataset([item], [LoadImaged(["image", "label"])], progress=False, num_workers=1)
    err = info.value
    assert err.file == item["image"] and err.key == "image", str(err)
    assert f"item 0 ({item['image']}, key 'image')" in str(err), str(err)
    d = {"image": "/d/imagesTr/a.nii.gz", "label": "/d/labelsTr/a.nii.gz"}
    assert failed_file(d, ValueError("/d/imagesTr/a.nii.gz: bad")) == ("image", "/d/imagesTr/a.nii.gz")
    bare = {"image": "a.nii.gz", "image2": "/d/imagesTr/a.nii.gz"}  # one file, two spellings: the fullest
    assert failed_file(bare, ValueError("a.nii.gz: bad")) == ("image2", "/d/imagesTr/a.nii.gz")


def test_failed_file_prefers_the_file_the_error_names():
    d = {"image": "/d/img.nii", "label": "/d/img.nii.gz"}
    assert failed_file(d, ValueError("/d/img.nii.gz: bad")) == ("label", "/d/img.nii.gz")  # longest match
    assert failed_file(d, FileNotFoundError(2, "gone", "/d/img.nii")) == ("image", "/d/img.nii")
    cause = ValueError("/d/img.nii.gz: crc")
    try:
        raise RuntimeError("wrapped") from cause
    except RuntimeError as err:
        assert failed_file(d, err) == ("label", "/d/img.nii.gz")  # found in the chained cause
    assert failed_file(d, ValueError("no file named")) == (None, "/d/img.nii")  # the item's first file
    word = {"image": "/d/a.nii.gz", "modality": "ct", "label": "/d/b.nii.gz"}
    assert failed_file(word, ValueError("ct volume unreadable")) == (None, "/d/a.nii.gz")  # "ct" is no file


@mark_random
def pick_key(d: dict) -> dict:
    if d["x"] == 5:
        return {**d, "picked": d["no_such_key"]}
    return d


def entries(n: int) -> list[dict]:
    return [{"x": i, "image_meta_dict": {"filename_or_obj": f"/scans/ct{i}.nii.gz"}} for i in range(n)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("workers", [0, 2])
def test_random_transform_error_mid_epoch_names_item_file_and_transform(workers):
    ds = CacheDataset(entries(8), [CountingDet(), pick_key], progress=False)
    with pytest.raises(KeyError) as info:  # still a KeyError for code that catches one
        for _ in ThreadDataLoader(ds, batch_size=2, num_workers=workers):
            pass
    err = info.value
    assert isinstance(err, TransformError) and isinstance(err.__cause__, KeyError)
    assert "pick_key failed reading item 5 (/scans/ct5.nii.gz): KeyError: 'no_such_key'" in str(err)
    assert (err.index, err.file, err.transform) == (5, "/scans/ct5.nii.gz", "pick_key")


class BatchedBoom:
    random = True

    def __call__(self, d: dict) -> dict:
        return d

    def batch_call(self, batch: list[dict]) -> dict:
        raise ValueError("crop larger than the volume")


def test_batched_random_transform_error_names_the_batch():
    ds = CacheDataset(entries(4), [CountingDet(), BatchedBoom()], progress=False)
    with pytest.raises(
        ValueError,
        match=r"BatchedBoom failed on the batch of items \[2, 3\] "
        r"\(/scans/ct2.nii.gz, /scans/ct3.nii.gz\)",
    ):
        ds.__getitems__([2, 3])


def test_uncached_item_error_names_the_item():
    data = entries(4)
    data[3]["fail"], data[3]["name"] = True, "ct3.nii.gz"
    ds = CacheDataset(data, [CountingDet()], progress=False, cache_num=2)  # items 2, 3 computed per read
    ds[2]
    with pytest.raises(ValueError, match=r"item 3 \(/scans/ct3.nii.gz\): ValueError: cannot read") as info:
        ds[3]
    assert isinstance(info.value, TransformError)


@pytest.mark.parametrize("workers", [1, 2])
def test_fill_and_uncached_read_errors_name_the_prefix_transform_that_failed(tmp_path, workers):
    """They named the item and its file but not the transform, which read errors of the random part name."""
    good = {**write_pair(tmp_path, "a"), "x": 0}
    bad = {**good, "x": 1, "label": str(tmp_path / "missing.nii.gz")}
    chain = [LoadImaged(["image", "label"]), CountingDet()]
    with pytest.raises(CacheFillError, match=r"failed in LoadImaged on item 1 \(.*missing.nii.gz") as info:
        CacheDataset([good, bad], chain, progress=False, num_workers=workers)
    assert info.value.transform == "LoadImaged"
    ds = CacheDataset([good, bad], chain, progress=False, cache_num=1)
    with pytest.raises(
        TransformError, match=r"^LoadImaged of the deterministic chain \(item not cached\)"
    ) as info:
        ds[1]
    assert info.value.transform == "LoadImaged" and isinstance(info.value, FileNotFoundError)


def test_message_is_printed_as_given():
    err = item_error(TransformError, "x", KeyError("k"))
    assert str(err) == "x" and isinstance(err, ItemError)  # not KeyError's quoted repr


@pytest.mark.timeout(60)
def test_error_from_a_torch_dataloader_worker_process_is_still_the_cause_type():
    ds = CacheDataset(entries(6), [CountingDet(), pick_key], progress=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=list)
    with pytest.raises(KeyError, match=r"pick_key failed reading item 5 \(/scans/ct5.nii.gz\)") as info:
        for _ in loader:  # the worker pickles the error's class; the parent rebuilds it from its bases
            pass
    assert isinstance(info.value, TransformError)


def test_a_fused_prefix_step_is_named_by_the_user_s_two_transforms():
    from fastpipe.transforms import Orientationd, Spacingd

    chain = [Orientationd("image", "RAS"), Spacingd("image", (1.0, 1.0, 1.0))]
    with pytest.raises(CacheFillError, match=r"failed in Orientationd\+Spacingd on item 0") as info:
        CacheDataset([{"image": torch.ones(4, 4)}], chain, progress=False)  # no channel axis
    assert info.value.transform == "Orientationd+Spacingd"  # not the internal OrientSpacingd
