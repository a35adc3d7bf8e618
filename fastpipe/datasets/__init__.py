"""Data lists (MSD ``dataset.json``) and the look-alike spleen data generator."""

from fastpipe.datasets.decathlon import load_decathlon_datalist
from fastpipe.datasets.synth import synthesize

__all__ = ["load_decathlon_datalist", "synthesize"]
