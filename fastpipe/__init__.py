"""fastpipe: 3D medical-imaging training data pipelines fast enough that the GPU never waits."""

from fastpipe import datasets, profiling, transforms

__version__ = "0.1.0"

__all__ = ["__version__", "datasets", "profiling", "transforms"]
