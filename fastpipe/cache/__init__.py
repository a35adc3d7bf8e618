"""The cache: ``CacheDataset``, ``SmartCacheDataset`` and their machinery (tiers, fill, persistence)."""

from fastpipe.cache._fill import CacheFillError
from fastpipe.cache._replacer import ReplacementError
from fastpipe.cache.cache_dataset import CacheDataset
from fastpipe.cache.smart_cache import SmartCacheDataset

__all__ = ["CacheDataset", "CacheFillError", "ReplacementError", "SmartCacheDataset"]
