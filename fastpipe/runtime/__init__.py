"""Runtime machinery shared by the cache, the loader and the ops: OpenMP per thread, fork safety, copy threads, host buffers."""
