"""fastpipe: 3D medical-imaging training data pipelines fast enough that the GPU never waits."""

from fastpipe import datasets, distributed, profiling, transforms
from fastpipe.cache_dataset import CacheDataset
from fastpipe.collate import list_data_collate
from fastpipe.smart_cache import SmartCacheDataset
from fastpipe.thread_loader import ThreadDataLoader

__version__ = "0.1.0"

__all__ = [
    "CacheDataset",
    "SmartCacheDataset",
    "ThreadDataLoader",
    "__version__",
    "datasets",
    "distributed",
    "list_data_collate",
    "profiling",
    "transforms",
]
