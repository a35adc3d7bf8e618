"""The public surface of ``import fastpipe as fp``: what it names, sorted, and where each name lives."""

from __future__ import annotations

import fastpipe as fp

PUBLIC = [
    "CacheDataset",
    "CacheFillError",
    "ReplacementError",
    "SmartCacheDataset",
    "ThreadDataLoader",
    "TransformError",
    "__version__",
    "datasets",
    "distributed",
    "list_data_collate",
    "profiling",
    "transforms",
]


def test_all_is_sorted_and_complete():
    assert fp.__all__ == sorted(fp.__all__)
    assert fp.__all__ == PUBLIC
    for name in fp.__all__:
        assert hasattr(fp, name), name


def test_subsystem_packages_export_the_same_objects():
    from fastpipe import cache, loader

    assert fp.CacheDataset is cache.CacheDataset
    assert fp.SmartCacheDataset is cache.SmartCacheDataset
    assert fp.ThreadDataLoader is loader.ThreadDataLoader
    assert fp.list_data_collate is loader.list_data_collate
    for module in (cache, loader):
        assert module.__all__ == sorted(module.__all__)


def test_error_classes_are_runtime_errors():
    assert issubclass(fp.CacheFillError, RuntimeError)
    assert issubclass(fp.ReplacementError, RuntimeError)
    assert fp.CacheFillError.__module__.startswith("fastpipe.cache")
    assert fp.ReplacementError.__module__.startswith("fastpipe.cache")
