"""The NVIDIA DALI peer: a numpy reader over the preprocessed volumes, pos/neg-style crops.

DALI has no cache of a transform chain, so its "fill" is running fastpipe's deterministic prefix
once and saving each volume as ``.npy`` (the page cache then keeps them in memory, as a cache
would). Each epoch the pipeline reads the volumes, and per volume draws ``NUM_SAMPLES`` crops:
``random_object_bbox`` picks the foreground object with probability ``pos/(pos+neg)`` (else the
whole volume), ``roi_random_crop`` picks a crop window that contains it, ``slice`` cuts image and
label there. That is DALI's documented recipe for the same sampling; it runs on CPU operators
when there is no GPU (``device_id=None``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from benchmarks import workload
from benchmarks.row_types import Row


def preprocess_to_npy(data, workdir: Path) -> tuple[list[str], list[str]]:
    """Run fastpipe's deterministic prefix once per item and save image/label as ``.npy``."""
    from fastpipe.transforms import Compose

    prefix = Compose(workload.fastpipe_chain(crop=False))
    workdir.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for i, item in enumerate(data):
        out = prefix(dict(item))
        img, lab = f"img{i:03d}.npy", f"lab{i:03d}.npy"
        np.save(workdir / img, out["image"].float().numpy())
        np.save(workdir / lab, out["label"].to(torch.uint8).numpy())
        images.append(img)
        labels.append(lab)
    return images, labels


def make_pipeline(root: Path, images, labels, batch_size: int, threads: int, seed: int, device_id=None):
    """A DALI pipeline yielding (B, NUM_SAMPLES, 1, *PATCH) image and label crops."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(
        batch_size=batch_size, num_threads=threads, device_id=device_id, seed=seed, prefetch_queue_depth=2
    )
    def spleen_crops():
        common = {"file_root": str(root), "seed": seed, "shuffle_after_epoch": True, "pad_last_batch": True}
        img = fn.readers.numpy(files=images, name="images", **common)
        lab = fn.readers.numpy(files=labels, **common)
        spatial = fn.squeeze(lab, axes=[0])
        shape = fn.constant(idata=[1, *workload.PATCH], dtype=types.INT64)
        zero = fn.constant(idata=[0], dtype=types.INT64)
        img_crops, lab_crops = [], []
        for _ in range(workload.NUM_SAMPLES):
            start, end = fn.segmentation.random_object_bbox(spatial, format="start_end", foreground_prob=0.5)
            anchor = fn.roi_random_crop(spatial, crop_shape=workload.PATCH, roi_start=start, roi_end=end)
            anchor = fn.cat(zero, fn.cast(anchor, dtype=types.INT64))
            img_crops.append(fn.slice(img, anchor, shape, axes=[0, 1, 2, 3], out_of_bounds_policy="pad"))
            lab_crops.append(fn.slice(lab, anchor, shape, axes=[0, 1, 2, 3], out_of_bounds_policy="pad"))
        return fn.stack(*img_crops), fn.stack(*lab_crops)

    pipe = spleen_crops()
    pipe.build()
    return pipe


class DaliLoader:
    """Iterate a DALI pipeline one epoch at a time, as torch tensors ``(B*NUM_SAMPLES, 1, *PATCH)``.

    The reader pads an epoch's last batch to ``batch_size`` by repeating its last volume
    (``pad_last_batch``); those repeats are dropped, so an epoch holds each volume's crops once.
    """

    def __init__(self, pipe, n_items: int, batch_size: int):
        self.pipe, self.n_items, self.batch_size = pipe, n_items, batch_size
        self.batches = math.ceil(n_items / batch_size)

    def __iter__(self):
        for b in range(self.batches):
            img, lab = self.pipe.run()
            keep = min(self.batch_size, self.n_items - b * self.batch_size)
            img, lab = torch.from_numpy(img.as_array()[:keep]), torch.from_numpy(lab.as_array()[:keep])
            yield {"image": img.flatten(0, 1), "label": lab.flatten(0, 1)}


def build(data, cfg):
    """The DALI row (see ``benchmarks.rows``)."""
    root = Path(cfg.workdir) / "dali-npy"
    images, labels = preprocess_to_npy(data, root)
    device_id = 0 if torch.cuda.is_available() and cfg.device != "cpu" else None
    pipe = make_pipeline(root, images, labels, cfg.batch_size, cfg.threads, cfg.seed, device_id)
    return Row(DaliLoader(pipe, len(data), cfg.batch_size), len(data), info={"device_id": device_id})
