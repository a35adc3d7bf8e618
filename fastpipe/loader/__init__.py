"""The loader: ``ThreadDataLoader`` (producer thread + bounded queue per epoch) and ``list_data_collate``."""

from fastpipe.loader.collate import list_data_collate
from fastpipe.loader.thread_loader import ThreadDataLoader

__all__ = ["ThreadDataLoader", "list_data_collate"]
