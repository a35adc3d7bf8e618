"""Persistent-cache keys: behaviour that mutation testing found unchecked (``fastpipe.cache._key``)."""

from __future__ import annotations

from fastpipe.cache._key import entry_owner, item_key, item_snapshot


def _key(item) -> str:
    return item_key(item, "chain", "v1")


def test_a_snapshot_keys_as_the_item_it_was_taken_from():
    item = {"image": "no/such/file.nii.gz", "roi": (1, 2), "boxes": [[1, 2], (3, 4)], "meta": {"a": (5,)}}
    snap = item_snapshot(item)
    assert snap == item and type(snap["roi"]) is tuple and type(snap["boxes"][1]) is tuple
    assert _key(snap) == _key(item)


def test_snapshots_of_items_that_differ_only_in_a_tuple_key_apart():
    a, b = {"image": "x.nii.gz", "roi": (1, 2)}, {"image": "x.nii.gz", "roi": (3, 4)}
    assert _key(item_snapshot(a)) != _key(item_snapshot(b))


def test_a_transform_writing_into_the_item_does_not_move_the_snapshot_key():
    """The cache keys an entry by the snapshot taken before the chain ran: edits in place must not reach it."""
    item = {"image": "x.nii.gz", "boxes": [[1, 2]], "meta": {"tags": ["a"]}}
    before = _key(item)
    snap = item_snapshot(item)
    item["boxes"].append([3, 4])
    item["boxes"][0][0] = 9
    item["meta"]["tags"].append("b")
    item["meta"]["new"] = 1
    item["image"] = "y.nii.gz"
    assert _key(snap) == before != _key(item)


def test_an_attached_nrrd_or_a_metaimage_without_a_data_file_field_keys_by_its_own_bytes(tmp_path):
    """A header that names no data file (an attached ``.nrrd``: its voxels follow the blank line) is one file."""
    nrrd = tmp_path / "a.nrrd"
    nrrd.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 1\nsizes: 4\nencoding: raw\n\n\x01\x02\x03\x04")
    mha = tmp_path / "b.mha"
    mha.write_bytes(b"ObjectType = Image\nNDims = 1\nDimSize = 4\nElementType = MET_UCHAR\n\x01\x02\x03\x04")
    for path in (nrrd, mha):
        owner = entry_owner({"image": str(path)}, 0, "chain", "v1")
        assert owner.sources == (str(path),)
        before = owner.key
        path.write_bytes(path.read_bytes()[:-1] + b"\x05")  # one voxel changes
        assert entry_owner({"image": str(path)}, 0, "chain", "v1").key != before


def test_a_header_naming_a_missing_data_file_keys_by_itself_and_voxels_are_not_read_as_header(tmp_path):
    """Only existing data files key the item; an attached NRRD's voxels (after the blank line) are not
    searched for a ``data file:`` field, even when their bytes spell one."""
    mhd = tmp_path / "a.mhd"
    mhd.write_bytes(b"ObjectType = Image\nNDims = 1\nDimSize = 4\nElementDataFile = missing.raw\n")
    assert entry_owner({"image": str(mhd)}, 0, "chain", "v1").sources == (str(mhd),)
    (tmp_path / "other.raw").write_bytes(b"1234")
    nrrd = tmp_path / "b.nrrd"
    nrrd.write_bytes(b"NRRD0004\ntype: uint8\nsizes: 22\nencoding: raw\n\ndata file: other.raw\n")
    assert entry_owner({"image": str(nrrd)}, 0, "chain", "v1").sources == (str(nrrd),)
    nhdr = tmp_path / "c.nhdr"
    nhdr.write_bytes(b"NRRD0004\ntype: uint8\nsizes: 4\nencoding: raw\ndata file: other.raw\n")
    assert entry_owner({"image": str(nhdr)}, 0, "chain", "v1").sources == (
        str(nhdr),
        str(tmp_path / "other.raw"),
    )
