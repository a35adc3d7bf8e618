"""load_decathlon_datalist: real-MSD-shaped json, MONAI parity, and clear errors for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from monai.data import load_decathlon_datalist as monai_load

from fastpipe.datasets import load_decathlon_datalist

# Shaped like Task09_Spleen/dataset.json (abridged), including the macOS "._" entries of the archive.
MSD_JSON = {
    "name": "Spleen",
    "description": "Spleen Segmentation",
    "reference": "Memorial Sloan Kettering Cancer Center",
    "licence": "CC-BY-SA 4.0",
    "release": "1.0 06/08/2018",
    "tensorImageSize": "3D",
    "modality": {"0": "CT"},
    "labels": {"0": "background", "1": "spleen"},
    "numTraining": 3,
    "numTest": 2,
    "training": [
        {"image": "./imagesTr/spleen_19.nii.gz", "label": "./labelsTr/spleen_19.nii.gz"},
        {"image": "./imagesTr/._spleen_19.nii.gz", "label": "./labelsTr/._spleen_19.nii.gz"},
        {"image": "./imagesTr/spleen_31.nii.gz", "label": "./labelsTr/spleen_31.nii.gz"},
        {"image": "./imagesTr/spleen_52.nii.gz", "label": "./labelsTr/spleen_52.nii.gz"},
    ],
    "test": ["./imagesTs/spleen_15.nii.gz", "./imagesTs/._spleen_15.nii.gz", "./imagesTs/spleen_23.nii.gz"],
}


def _write(folder: Path, data, name: str = "dataset.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def task(tmp_path: Path) -> Path:
    root = tmp_path / "Task09_Spleen"
    _write(root, MSD_JSON)
    return root


def test_training_section_gives_absolute_paths_without_resource_forks(task: Path):
    data = load_decathlon_datalist(task)
    assert [Path(d["image"]).name for d in data] == [
        "spleen_19.nii.gz",
        "spleen_31.nii.gz",
        "spleen_52.nii.gz",
    ]
    for d in data:
        assert set(d) == {"image", "label"}
        assert os.path.isabs(d["image"]) and os.path.isabs(d["label"])
        assert d["image"] == str(task / "imagesTr" / Path(d["image"]).name)
        assert d["label"] == str(task / "labelsTr" / Path(d["image"]).name)


def test_matches_monai_on_the_same_json(task: Path):
    """Same items as MONAI, which does not drop the '._' entries (we do)."""
    ours = load_decathlon_datalist(task / "dataset.json")
    theirs = [d for d in monai_load(task / "dataset.json") if "._" not in d["image"]]
    assert ours == theirs
    ours_test = load_decathlon_datalist(task, section="test")
    theirs_test = [
        d for d in monai_load(task / "dataset.json", data_list_key="test") if "._" not in d["image"]
    ]
    assert (
        ours_test
        == theirs_test
        == [{"image": str(task / "imagesTs" / n)} for n in ("spleen_15.nii.gz", "spleen_23.nii.gz")]
    )


def test_relative_root_base_dir_and_monai_keyword(task: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(task.parent)
    data = load_decathlon_datalist("Task09_Spleen")  # relative root: paths still absolute
    assert data[0]["image"] == str(task / "imagesTr" / "spleen_19.nii.gz")
    other = tmp_path / "elsewhere"
    moved = load_decathlon_datalist(task, base_dir=other)
    assert moved[0]["label"] == str(other / "labelsTr" / "spleen_19.nii.gz")
    assert load_decathlon_datalist(task, data_list_key="test")[0] == {
        "image": str(task / "imagesTs" / "spleen_15.nii.gz")
    }


def test_other_keys_follow_monai(tmp_path: Path):
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "m1.nii.gz").touch()
    items = [{"image": "a.nii.gz", "label": "b.nii.gz", "fold": 2, "mask": "masks/m1.nii.gz", "note": "x/y"}]
    _write(tmp_path, {"training": items})
    (d,) = load_decathlon_datalist(tmp_path)
    assert d["fold"] == 2 and d["note"] == "x/y"  # not a path that exists: kept as is
    assert d["mask"] == str(tmp_path / "masks" / "m1.nii.gz")
    assert d == monai_load(tmp_path / "dataset.json")[0]


def test_multichannel_list_of_paths(tmp_path: Path):
    _write(tmp_path, {"training": [{"image": ["t1.nii.gz", "t2.nii.gz"], "label": "l.nii.gz"}]})
    (d,) = load_decathlon_datalist(tmp_path)
    assert d["image"] == [str(tmp_path / "t1.nii.gz"), str(tmp_path / "t2.nii.gz")]


def test_returns_new_dicts(task: Path):
    first = load_decathlon_datalist(task)
    first[0]["image"] = "changed"
    assert load_decathlon_datalist(task)[0]["image"] != "changed"


def test_missing_folder_or_file_names_the_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        load_decathlon_datalist(tmp_path)  # a folder without dataset.json
    missing = tmp_path / "nope" / "dataset.json"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_decathlon_datalist(missing)


def test_truncated_json_names_file_and_position(tmp_path: Path):
    text = json.dumps(MSD_JSON, indent=2)
    path = _write(tmp_path, text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"dataset\.json: malformed JSON at line \d+ column \d+") as e:
        load_decathlon_datalist(tmp_path)
    assert str(path) in str(e.value)


def test_binary_garbage_is_a_value_error(tmp_path: Path):
    (tmp_path / "dataset.json").write_bytes(b"\x1f\x8b\x08\x00\xff\xfe garbage")
    with pytest.raises(ValueError, match="dataset.json"):
        load_decathlon_datalist(tmp_path)


@pytest.mark.parametrize(
    ("content", "section", "pattern"),
    [
        ([1, 2], "training", "expected a JSON object at the top level, got list"),
        (
            {"numTraining": 1, "test": []},
            "training",
            r"no 'training' section; list sections present: \['test'\]",
        ),
        ({"training": {"image": "a"}}, "training", "section 'training' must be a list, got dict"),
        ({"training": [42]}, "training", r"training\[0\]: expected an object"),
        (
            {"training": [{"image": "a", "label": "b"}, {"image": []}]},
            "training",
            r"training\[1\]: 'image' must be",
        ),
        ({"training": [{"image": ["a", None]}]}, "training", r"training\[0\]: 'image' must be"),
        ({"test": [None]}, "test", r"test\[0\]: expected an object"),
    ],
)
def test_malformed_content_names_file_and_entry(tmp_path: Path, content, section, pattern):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=pattern) as e:
        load_decathlon_datalist(tmp_path, section=section)
    assert str(path) in str(e.value)


def test_entries_monai_accepts_pass_through_like_monai(tmp_path: Path):
    from monai.data import load_decathlon_datalist as monai_load

    entries = [{"t1": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, {"image": "b.nii.gz", "label": None},
               {"image": "c.nii.gz", "label": 3}, {"image": "d.nii.gz", "class": [0, 1]}]  # fmt: skip
    path = _write(tmp_path, {"training": entries})
    ours = load_decathlon_datalist(tmp_path)
    theirs = monai_load(str(path), True, "training")
    assert [sorted(e) for e in ours] == [sorted(e) for e in theirs]
    assert ours[1]["label"] is None and ours[2]["label"] == 3 and ours[3]["class"] == [0, 1]
    assert ours[0]["label"] == os.path.abspath(theirs[0]["label"])
    assert load_decathlon_datalist(tmp_path, base_dir="~")[1]["image"] == os.path.expanduser("~/b.nii.gz")


def test_monai_positional_call_is_a_type_error(task: Path):
    with pytest.raises(TypeError, match="is_segmentation by keyword"):
        load_decathlon_datalist(task, True, "training")
