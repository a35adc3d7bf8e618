"""fastpipe: 3D medical-imaging training data pipelines fast enough that the GPU never waits."""

from fastpipe import datasets, distributed, profiling, transforms
from fastpipe.cache import CacheDataset, CacheFillError, ReplacementError, SmartCacheDataset, TransformError
from fastpipe.loader import ThreadDataLoader, list_data_collate

__version__ = "0.1.0"

__all__ = [
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
