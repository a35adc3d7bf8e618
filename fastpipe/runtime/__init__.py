"""Machinery shared by the cache, the loader and the ops: OpenMP, fork safety, copy threads, queues, env."""
