"""The cache: ``CacheDataset``, ``SmartCacheDataset`` and their machinery (tiers, fill, persistence)."""

from fastpipe.cache.cache_dataset import CacheDataset
from fastpipe.cache.errors import CacheFillError, ReplacementError, TransformError
from fastpipe.cache.smart_cache import SmartCacheDataset

__all__ = ["CacheDataset", "CacheFillError", "ReplacementError", "SmartCacheDataset", "TransformError"]
