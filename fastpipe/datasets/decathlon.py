"""Read a Medical Segmentation Decathlon ``dataset.json`` into a list of data items (MONAI's semantics)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["load_decathlon_datalist"]

logger = logging.getLogger(__name__)

_PATH_KEYS = ("image", "label")


def _json_path(root: str | os.PathLike) -> Path:
    """``root`` itself when it is a file, else ``root/dataset.json``; FileNotFoundError when missing."""
    path = Path(root).expanduser()
    if path.is_dir():
        path = path / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"MSD datalist not found: {path} (expected a Decathlon task folder holding dataset.json, "
            "or the path of a dataset.json; `fastpipe synth --out DIR` writes one)"
        )
    return path


def _read_json(path: Path) -> dict[str, Any]:
    """Parse ``path``; ValueError naming the file, line and column when it is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _check_paths(value: Any, key: str, where: str) -> None:
    """A path string must not be empty, nor a list of path strings (a multi-channel image); other
    values (``None``, a class number) pass through as MONAI passes them."""
    if isinstance(value, str):
        ok = value != ""
    elif isinstance(value, list) and (not value or any(isinstance(v, str) for v in value)):
        ok = len(value) > 0 and all(isinstance(v, str) and v for v in value)  # no half-list of paths
    else:
        return
    if not ok:
        raise ValueError(f"{where}: {key!r} must be a file path or a list of file paths, got {value!r}")


def _is_resource_fork(value: Any) -> bool:
    """True for macOS AppleDouble files (``._name``), which real MSD archives contain."""
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and os.path.basename(v).startswith("._") for v in values)


def _join(base: Path, value: Any, must_exist: bool) -> Any:
    """Absolute, normalised path(s) of ``value`` under ``base``; as MONAI, other keys join only if they exist."""
    if isinstance(value, list):
        if not all(isinstance(v, (str, os.PathLike)) for v in value):
            return value
        return [_join(base, v, must_exist) for v in value]
    if not isinstance(value, (str, os.PathLike)):
        return value
    joined = os.path.abspath(os.path.normpath(os.path.join(base, value)))
    if must_exist and not os.path.exists(joined):
        return value
    return joined


def _entry(raw: Any, index: int, where: str, base: Path, is_segmentation: bool) -> dict[str, Any] | None:
    """One validated item with absolute paths, or None for a macOS ``._`` entry."""
    here = f"{where}[{index}]"
    if isinstance(raw, str):  # MSD's "test" section lists bare image paths
        raw = {"image": raw}
    if not isinstance(raw, dict):
        raise ValueError(
            f"{here}: expected an object like {{'image': ..., 'label': ...}} or a path, got {raw!r}"
        )
    path_keys = _PATH_KEYS if is_segmentation else ("image",)
    for key in path_keys:
        if key in raw:
            _check_paths(raw[key], key, here)
    if any(_is_resource_fork(raw[k]) for k in path_keys if k in raw):
        return None
    return {k: _join(base, v, must_exist=k not in path_keys) for k, v in raw.items()}


def _section_name(section: Any, data_list_key: str | None) -> str:
    """``data_list_key`` when given, else ``section``; TypeError for a bool (MONAI's positional ``is_segmentation``)."""
    if isinstance(section, bool):
        raise TypeError(
            "section must be a str such as 'training'; fastpipe's second argument is the section, "
            "pass MONAI's is_segmentation by keyword"
        )
    return data_list_key if data_list_key is not None else section


def _section_items(path: Path, data: dict[str, Any], section: str) -> list[Any]:
    """The list under ``section`` of ``path``'s ``data``; ValueError naming the file when absent or not a list."""
    if section not in data:
        lists = sorted(k for k, v in data.items() if isinstance(v, list))
        raise ValueError(f"{path}: no {section!r} section; list sections present: {lists}")
    items = data[section]
    if not isinstance(items, list):
        raise ValueError(f"{path}: section {section!r} must be a list, got {type(items).__name__}")
    return items


def load_decathlon_datalist(
    root: str | os.PathLike,
    section: str = "training",
    base_dir: str | os.PathLike | None = None,
    *,
    is_segmentation: bool = True,
    data_list_key: str | None = None,
) -> list[dict[str, Any]]:
    """Read the items of one section of an MSD ``dataset.json``: new dicts with absolute paths.

    A downloaded ``Task09_Spleen`` folder and ``fastpipe synth`` output both work. Paths are joined to
    ``base_dir`` and made absolute (other keys than ``image``/``label`` only when the joined path exists,
    as in MONAI); the ``test`` section's bare paths become ``{"image": path}``; macOS ``._`` entries
    (present in the real archives) are skipped.

    Args:
        root: a Decathlon task folder holding ``dataset.json``, or the path of the json itself.
        section: which list to read: ``"training"`` (default), ``"validation"``, ``"test"``, ...
        base_dir: folder the relative paths are relative to; default the json's folder.
        is_segmentation: as MONAI: treat ``label`` as a path. Default True.
        data_list_key: MONAI's name for ``section``; overrides it when given.

    Raises:
        FileNotFoundError: ``root`` is neither a json file nor a folder holding ``dataset.json``.
        ValueError: malformed JSON, a missing or non-list section, or an entry of the wrong type
            (the message names the file and the entry).

    Example:
        >>> data = load_decathlon_datalist("/data/Task09_Spleen")
        >>> data[0]["image"]
        '/data/Task09_Spleen/imagesTr/spleen_19.nii.gz'
    """
    section = _section_name(section, data_list_key)
    path = _json_path(root)
    items = _section_items(path, _read_json(path), section)
    base = Path(base_dir).expanduser() if base_dir is not None else path.parent
    out = [_entry(raw, i, f"{path} {section}", base, is_segmentation) for i, raw in enumerate(items)]
    kept = [item for item in out if item is not None]
    if len(kept) < len(out):
        logger.info("%s: skipped %d macOS '._' entries in %r", path, len(out) - len(kept), section)
    return kept
