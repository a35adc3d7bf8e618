"""Data lists (MSD ``dataset.json``) and the look-alike spleen data generator."""

__all__: list[str] = []
