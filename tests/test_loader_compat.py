"""fp.CacheDataset with other people's loaders: torch DataLoader (no collate_fn), MONAI's DataLoader and
ThreadDataLoader. Only the dataset line changes; batches are (B * num_samples, C, *patch) windows."""

from __future__ import annotations

import warnings

import monai.data
import monai.transforms as M
import numpy as np
import pytest
import torch

import fastpipe as fp
from fastpipe.transforms import RandCropByPosNegLabeld, mark_random

KEYS = ["image", "label"]
PATCH, SAMPLES = (8, 8, 6), 4


def items(n: int = 5) -> list[dict]:
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        label = torch.zeros((1, 20, 18, 14), dtype=torch.uint8)
        label[0, 5:12, 4:10, 3:9] = 1
        out.append({"image": torch.randn((1, 20, 18, 14), generator=g), "label": label, "name": f"case{i}"})
    return out


LOADERS = {
    "torch": lambda ds: torch.utils.data.DataLoader(ds, batch_size=2),
    "monai": lambda ds: monai.data.DataLoader(ds, batch_size=2),
    "monai-thread": lambda ds: monai.data.ThreadDataLoader(ds, batch_size=2),
}
CROPS = {
    "fastpipe-crop": lambda: RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=SAMPLES),
    "monai-crop-translated": lambda: M.RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=SAMPLES),
}


def check_windows(ds: fp.CacheDataset, batch: dict, first: int) -> None:
    """Every crop is the window of its source volume at ``crop_starts`` (image and label alike)."""
    for n in range(batch["image"].shape[0]):
        x, y, z = (int(v) for v in batch["crop_starts"][n])
        src = ds.cached_entry(first + n // SAMPLES)
        assert batch["name"][n] == src["name"]
        for key in KEYS:
            window = src[key][:, x : x + PATCH[0], y : y + PATCH[1], z : z + PATCH[2]]
            assert torch.equal(torch.as_tensor(batch[key][n]), window), (key, n)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("crop", list(CROPS))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_any_loader_gets_b_times_num_samples_crops_with_the_right_values(loader, crop):
    ds = fp.CacheDataset(items(), [CROPS[crop]()], progress=False, num_workers=1)
    assert ds.batched
    batches = list(LOADERS[loader](ds))
    assert [tuple(b["image"].shape) for b in batches] == [(8, 1, *PATCH)] * 2 + [(4, 1, *PATCH)]
    assert all(b["label"].shape == b["image"].shape[:1] + (1, *PATCH) for b in batches)
    for b_i, b in enumerate(batches):
        check_windows(ds, b, 2 * b_i)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loader", list(LOADERS))
def test_per_item_suffix_multi_sample_lists_are_flattened_for_any_loader(loader):
    """A suffix without a batched form (MONAI's crop kept as is): still B * num_samples crops per batch."""
    crop = M.RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=SAMPLES)
    ds = fp.CacheDataset(items(4), [crop], progress=False, num_workers=1, translate=False)
    assert not ds.batched
    shapes = [tuple(b["image"].shape) for b in LOADERS[loader](ds)]
    assert shapes == [(8, 1, *PATCH)] * 2


@pytest.mark.timeout(60)
def test_per_crop_step_after_the_batched_crop_with_a_torch_loader():
    def negate(d):
        return {**d, "image": -d["image"]}

    crop = RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=SAMPLES)
    ds = fp.CacheDataset(items(4), [crop, mark_random(negate)], progress=False, num_workers=1)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (8, 1, *PATCH)
    check_windows(ds, {**batch, "image": -batch["image"]}, 0)


def test_fastpipe_collate_takes_the_collated_dict_without_a_copy():
    ds = fp.CacheDataset(
        items(3), [RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=2)], progress=False
    )
    got = ds.__getitems__([0, 1])
    batch = fp.list_data_collate(got)
    assert batch is got.collated and batch["image"].shape == (4, 1, *PATCH)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loader", ["torch", "fastpipe"])
def test_fastpipe_collate_sees_what_a_users_collate_changed_in_the_crops(loader):
    """A user's collate_fn that edits the crops, then calls fp.list_data_collate on the same list, got
    the dataset's batch as it was made: its edits (a value replaced, a key added) were silently lost."""

    def edit_then_collate(batch):
        for d in (c for e in batch for c in (e if isinstance(e, list) else [e])):  # fastpipe's: per item
            d["image"] = torch.full_like(d["image"], 7.0)
            d["extra"] = 1
        return fp.list_data_collate(batch)

    crop = RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=2)
    ds = fp.CacheDataset(items(4), [crop], progress=False, num_workers=1)
    make = torch.utils.data.DataLoader if loader == "torch" else fp.ThreadDataLoader
    batch = next(iter(make(ds, batch_size=2, collate_fn=edit_then_collate)))
    assert bool((batch["image"] == 7.0).all()) and torch.equal(
        batch["extra"], torch.ones(4, dtype=torch.long)
    )
    shorter = ds.__getitems__([0, 1])
    del shorter[0]
    assert fp.list_data_collate(shorter)["image"].shape == (3, 1, *PATCH)
    untouched = ds.__getitems__([0, 1])
    assert fp.list_data_collate(untouched) is untouched.collated  # still no copy when nothing changed


@pytest.mark.timeout(60)
def test_a_monai_step_fastpipe_lacks_runs_on_each_crop_as_monai_would():
    """MONAI's ScaleIntensityd after the crop: kept as is, applied to each crop of the batched op."""
    crop = M.RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=SAMPLES)
    scale = M.ScaleIntensityd("image", minv=0.0, maxv=1.0)
    ds = fp.CacheDataset(items(4), [crop, scale], progress=False, num_workers=1)
    assert ds.batched and ds.suffix[2] is scale  # kept as it is, after the batched crop
    assert type(ds.suffix[1]).__name__ == "ToMonaid"  # and handed MetaTensor crops, as MONAI's chain
    batch = ds.fetch_seeded([1, 3], seed=2)
    assert batch["image"].shape == (8, 1, *PATCH)
    for n in range(8):
        x, y, z = (int(v) for v in batch["crop_starts"][n])
        src = ds.cached_entry([1, 3][n // SAMPLES])["image"][
            :, x : x + PATCH[0], y : y + PATCH[1], z : z + PATCH[2]
        ]
        expected = torch.as_tensor(scale({"image": src.clone()})["image"])
        assert torch.allclose(torch.as_tensor(batch["image"][n]), expected), n


@pytest.mark.timeout(120)
def test_torch_worker_processes_draw_new_crops_each_epoch_and_per_worker():
    """Each worker reseeds the suffix from torch's per-worker seed (as MONAI's DataLoader does), so
    epochs and workers differ, and ``torch.manual_seed`` makes the whole run repeat."""
    ds = fp.CacheDataset(
        items(4), [RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=1)], progress=False
    )

    def epochs(n=2):
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2)
        return [[tuple(b["crop_starts"][0].tolist()) for b in loader] for _ in range(n)]

    torch.manual_seed(0)
    first = epochs()
    assert first[0] != first[1]  # a new base seed each epoch: new crops
    by_worker = [first[0][0::2], first[0][1::2]]  # batch_size 1: workers take turns
    assert by_worker[0] != by_worker[1]
    torch.manual_seed(0)
    assert epochs() == first


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loader", ["fastpipe", "fastpipe-collate", *LOADERS])
def test_per_item_numbers_and_arrays_come_as_tensors_from_every_loader(loader):
    """A class label or a coordinate array beside the volume (what the crop does not cut) is a
    tensor in the batch, as MONAI's collate makes it, whichever loader collates the batched crop."""
    data = [{**it, "grade": i, "coord": np.array([i, 2 * i])} for i, it in enumerate(items(4))]
    ds = fp.CacheDataset(
        data, [RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=SAMPLES)], progress=False
    )
    make = {
        "fastpipe": lambda: fp.ThreadDataLoader(ds, batch_size=2),
        "fastpipe-collate": lambda: torch.utils.data.DataLoader(
            ds, batch_size=2, collate_fn=fp.list_data_collate
        ),
        **{k: lambda k=k: LOADERS[k](ds) for k in LOADERS},
    }[loader]
    batch = next(iter(make()))
    assert torch.equal(batch["grade"], torch.tensor([0] * SAMPLES + [1] * SAMPLES))
    assert torch.equal(batch["coord"], torch.tensor([[0, 0]] * SAMPLES + [[1, 2]] * SAMPLES))
    assert batch["name"] == ["case0"] * SAMPLES + ["case1"] * SAMPLES


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_samples", [1, 2])
def test_thread_loader_batches_meta_tensors_with_each_items_metadata_as_monai(num_samples):
    """MetaTensor items were stacked by torch.stack alone: the batch kept item 0's metadata and
    is_batch=False, so decollate_batch gave every item item 0's file name (SaveImaged overwrote one
    file) and a row of item 0's affine as the others' affine."""
    data = [
        {
            "img": monai.data.MetaTensor(
                torch.randn(1, 8, 8, 8),
                affine=torch.diag(torch.tensor([i + 1.0, 1.0, 1.0, 1.0])),
                meta={"filename_or_obj": f"case{i}.nii.gz"},
            )
        }
        for i in range(4)
    ]
    crop = M.RandSpatialCropSamplesd("img", (4, 4, 4), num_samples=num_samples, random_size=False)
    theirs = next(iter(monai.data.DataLoader(monai.data.Dataset(data, crop), batch_size=2)))
    ours = next(iter(fp.ThreadDataLoader(fp.CacheDataset(data, [crop], progress=False), batch_size=2)))
    names = [f"case{i}.nii.gz" for i in (0, 1) for _ in range(num_samples)]
    for batch in (theirs, ours):
        assert batch["img"].is_batch and batch["img"].meta["filename_or_obj"] == names
        split = monai.data.decollate_batch(batch)
        assert [d["img"].meta["filename_or_obj"] for d in split] == names
        assert [float(d["img"].affine[0, 0]) for d in split] == [float(n[4]) + 1 for n in names]
        assert batch["img"].shape == (2 * num_samples, 1, 4, 4, 4)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dataset", ["Dataset", "CacheDataset"])
def test_a_monai_datasets_random_transforms_are_seeded_as_monais_loader_seeds_them(dataset):
    """MONAI's loader seeds a dataset's random transforms from torch's generator when it is made, so
    torch.manual_seed(0) gives the same augmentations every run; fastpipe's left them unseeded:
    every run augmented differently, and never as MONAI's loader did."""

    def epochs(loader_cls) -> list[torch.Tensor]:
        torch.manual_seed(0)
        data = [{"img": torch.arange(16.0).reshape(1, 4, 4)} for _ in range(6)]
        chain = M.Compose(
            [M.RandGaussianNoised("img", prob=0.7), M.RandFlipd("img", prob=0.5, spatial_axis=0)]
        )
        kwargs = {} if dataset == "Dataset" else {"progress": False}
        ds = getattr(monai.data, dataset)(data, chain, **kwargs)
        loader = loader_cls(ds, batch_size=2)
        return [b["img"] for _ in range(2) for b in loader]

    theirs, ours, again = (
        epochs(c) for c in (monai.data.ThreadDataLoader, fp.ThreadDataLoader, fp.ThreadDataLoader)
    )
    assert len(ours) == len(theirs) == 6
    assert all(torch.allclose(a, b) for a, b in zip(theirs, ours, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ours, again, strict=True))
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    fp.ThreadDataLoader(monai.data.Dataset([{"img": torch.zeros(1)}], M.RandFlipd("img")), seed=1)
    assert torch.equal(torch.rand(3), want)  # the user's later draws are left as they were


class _Proxy:
    """An attribute whose every lookup raises (a remote handle, say)."""

    def __getattr__(self, name: str):
        raise RuntimeError(f"no {name} here")


class _OwnDataset(torch.utils.data.Dataset):
    """A user's dataset holding a MONAI chain."""

    def __init__(self, data: list, transform) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        return self.transform(dict(self.data[i]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wrap", ["random_split", "own-class", "own-class-cycle"])
def test_a_wrapped_monai_chain_is_seeded_as_monais_loader_seeds_it(wrap):
    """Only a dataset of MONAI's own module was seeded: a random_split of one (a Subset) or a user's
    dataset holding a MONAI chain augmented differently on every run under torch.manual_seed(0), where
    MONAI's loader seeds any dataset (set_rnd) and repeats the run."""

    def epoch(loader_cls) -> torch.Tensor:
        torch.manual_seed(0)
        data = [{"img": torch.zeros(1, 4, 4)} for _ in range(4)]
        chain = M.Compose([M.RandGaussianNoised("img", prob=1.0)])
        if wrap == "random_split":
            ds = torch.utils.data.random_split(monai.data.Dataset(data, chain), [4, 0])[0]
        else:
            ds = _OwnDataset(data, chain)
            if wrap == "own-class-cycle":
                ds.parent = [ds]  # MONAI's set_rnd would recurse for ever on it
                ds.proxy = _Proxy()  # and hasattr() on it raises
        return torch.cat([b["img"] for b in loader_cls(ds, batch_size=2)])

    ours, again = epoch(fp.ThreadDataLoader), epoch(fp.ThreadDataLoader)
    assert torch.equal(ours, again)
    if wrap != "own-class-cycle":
        assert torch.allclose(ours, epoch(monai.data.ThreadDataLoader))


def _aligned_pairs(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        vol = torch.rand((1, 40, 40, 40), generator=g)
        out.append({"image": vol, "label": vol.clone()})
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("wrap", ["Dataset", "random_split"])
def test_fetch_threads_never_mix_two_draws_of_a_monai_random_transform(wrap):
    """MONAI's workers are processes, each with its own transforms; fastpipe's fetch threads shared the
    dataset's, so one thread's RandSpatialCropd draw cropped another thread's item: image and label
    cropped at different places (a third of the items), silently. Each read now has its own copy,
    seeded per item (a fastpipe step inside MONAI's Compose too): aligned, and the same batches
    whatever num_workers is."""

    def epochs(num_workers: int) -> list[torch.Tensor]:
        crop = M.RandSpatialCropd(KEYS, roi_size=(6, 6, 6), random_size=False)
        chain = M.Compose([crop, fp.transforms.RandFlipd(KEYS, prob=0.5, spatial_axis=0)])
        ds = monai.data.Dataset(_aligned_pairs(48), chain)
        if wrap == "random_split":  # a torch Subset: read with __getitems__, whole batches in parallel
            ds = torch.utils.data.random_split(ds, [40, 8], generator=torch.Generator().manual_seed(0))[0]
        loader = fp.ThreadDataLoader(ds, batch_size=4, num_workers=num_workers, seed=5)
        out = []
        for _ in range(3):
            for b in loader:
                mixed = (b["image"] != b["label"]).flatten(1).any(1)
                assert not mixed.any(), f"{int(mixed.sum())} items with image and label cropped apart"
                out.append(b["image"])
        return out

    four, two = epochs(4), epochs(2)
    assert all(torch.equal(a, b) for a, b in zip(four, two, strict=True))
    assert not torch.equal(four[0], four[len(four) // 3])  # the next epoch draws anew


class _LazyHandle(torch.utils.data.Dataset):
    """Opens its file on first read; pickling drops the handle, so each worker process opens its own."""

    def __init__(self):
        self.handle = None
        self.transform = M.Compose([M.RandFlipd("x", prob=0.5, spatial_axis=0)])

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "handle"}

    def __len__(self):
        return 8

    def __getitem__(self, i):
        self.handle = self.handle or object()
        return self.transform({"x": torch.full((1, 2, 2), float(i))})


@pytest.mark.timeout(60)
def test_fetch_thread_copies_keep_the_attributes_pickling_drops():
    """The copies were made with copy.copy, which goes through __getstate__: a dataset that drops its
    file handle when pickled lost the attribute, and every read raised AttributeError."""
    batches = list(fp.ThreadDataLoader(_LazyHandle(), batch_size=4, num_workers=2, seed=0))
    assert [b["x"].shape for b in batches] == [(4, 1, 2, 2)] * 2


@pytest.mark.timeout(120)
def test_a_monai_smartcache_read_with_workers_keeps_monai_s_windows_after_set_data():
    """MONAI's loader seeds a dataset's random state only with num_workers=0; fastpipe's seeded it always,
    which reseeded a MONAI SmartCacheDataset's shuffle, so its set_data() windows differed from MONAI's."""

    def windows(loader_cls) -> list[list[int]]:
        torch.manual_seed(0)
        data = [{"id": i} for i in range(12)]
        ds = monai.data.SmartCacheDataset(
            data, None, cache_num=4, replace_rate=0.5, shuffle=True, seed=3, progress=False
        )
        loader = loader_cls(ds, batch_size=2, num_workers=2)
        out = []
        ds.start()
        for epoch in range(4):
            if epoch == 2:
                ds.shutdown()
                ds.set_data([{"id": 100 + i} for i in range(12)])
                ds.start()
            out.append(sorted(int(i) for b in loader for i in b["id"]))
            ds.update_cache()
        ds.shutdown()
        return out

    assert windows(fp.ThreadDataLoader) == windows(monai.data.ThreadDataLoader)


@pytest.mark.timeout(60)
def test_random_transforms_that_cannot_be_copied_make_the_reads_take_turns():
    """A random transform holding a lock cannot be deep-copied: one warning, and the reads stay aligned."""
    import threading

    class LockedCrop(M.RandSpatialCropd):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.lock = threading.Lock()

    chain = M.Compose([LockedCrop(KEYS, roi_size=(6, 6, 6), random_size=False)])
    loader = fp.ThreadDataLoader(monai.data.Dataset(_aligned_pairs(16), chain), batch_size=4, num_workers=3)
    with pytest.warns(RuntimeWarning, match="read one at a time"):
        batches = list(loader)
    assert all(torch.equal(b["image"], b["label"]) for b in batches) and len(batches) == 4


@pytest.mark.timeout(120)
def test_fetch_thread_copies_reseed_the_states_of_nested_one_of_chains():
    """A random state deep inside the chain (Compose > OneOf > Compose > OneOf > Compose > RandAffined > its
    RandAffine > its grid, each list a level too) was out of the walk's reach (8 levels): not reseeded per
    item, so the draws depended on which copy read an item, and num_workers changed the batches."""

    def chain():
        affine = M.RandAffined(KEYS, prob=1.0, rotate_range=0.3, mode="nearest")
        pick = M.OneOf([M.Compose([affine]), M.RandFlipd(KEYS, prob=1.0)])
        crop = M.RandSpatialCropd(KEYS, roi_size=(6, 6, 6), random_size=False)
        return M.Compose([M.OneOf([M.Compose([pick, crop]), M.Compose([crop])])])

    def epochs(num_workers: int) -> list[torch.Tensor]:
        ds = monai.data.Dataset(_aligned_pairs(16), chain())
        loader = fp.ThreadDataLoader(ds, batch_size=4, num_workers=num_workers, seed=2)
        return [b["image"].as_tensor() for _ in range(3) for b in loader]

    assert all(torch.equal(a, b) for a, b in zip(epochs(1), epochs(3), strict=True))


@pytest.mark.timeout(120)
def test_an_array_dataset_read_by_fetch_threads_is_the_same_whatever_num_workers():
    """MONAI's ArrayDataset seeds its transforms per item from its own R: the copies shared the original's,
    drawn in whichever order the threads came, so num_workers changed the crops."""
    volumes = [np.random.RandomState(i).rand(1, 16, 16, 16).astype(np.float32) for i in range(16)]

    def epochs(num_workers: int) -> list[torch.Tensor]:
        def crop():
            return M.Compose([M.RandSpatialCrop((6, 6, 6), random_size=False)])

        ds = monai.data.ArrayDataset(volumes, crop(), volumes, crop())
        out = []
        for _ in range(3):
            for image, seg in fp.ThreadDataLoader(ds, batch_size=4, num_workers=num_workers, seed=1):
                assert torch.equal(image, seg)  # the pair is cropped alike
                out.append(image.as_tensor())
        return out

    assert all(torch.equal(a, b) for a, b in zip(epochs(1), epochs(4), strict=True))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("num_samples", [1, 3])
def test_a_users_collate_fn_gets_a_list_of_crops_per_item_as_under_monai(num_samples, num_workers):
    """fp.ThreadDataLoader handed a user's collate_fn the batch's crops flat (B * num_samples dicts),
    where MONAI's loaders hand it one list of num_samples crops per item: a collate that zips per
    item, or counts items, got other input than under MONAI. The crops and their draws stay those of
    the default path."""
    seen: dict[str, list] = {}

    def recording(tag, collate=monai.data.list_data_collate):
        def record(batch):
            seen[tag] = batch
            return collate(batch)

        return record

    def crop(cls):
        return cls(KEYS, "label", PATCH, num_samples=num_samples)

    monai_ds = monai.data.Dataset(items(2), crop(M.RandCropByPosNegLabeld))  # one batch
    next(iter(monai.data.DataLoader(monai_ds, batch_size=2, collate_fn=recording("monai"))))
    ds = fp.CacheDataset(items(2), [crop(RandCropByPosNegLabeld)], progress=False, num_workers=1)

    def first(**kw):
        return next(iter(fp.ThreadDataLoader(ds, batch_size=2, num_workers=num_workers, seed=3, **kw)))

    plain = first()
    for tag, collate in [("fp", monai.data.list_data_collate), ("pad", monai.data.pad_list_data_collate)]:
        ours = first(collate_fn=recording(tag, collate))
        assert isinstance(seen[tag], list) and len(seen[tag]) == len(seen["monai"]) == 2
        assert all(isinstance(it, list) and len(it) == num_samples for it in seen[tag])
        names = [[c["name"] for c in it] for it in seen[tag]]
        assert (
            names
            == [[c["name"] for c in it] for it in seen["monai"]]
            == [["case0"] * num_samples, ["case1"] * num_samples]
        )
        for key in (*KEYS, "crop_starts"):
            assert torch.equal(torch.as_tensor(ours[key]), plain[key]), (tag, key)
        check_windows_of(ds, ours, 0, num_samples)


@pytest.mark.timeout(60)
def test_a_users_collate_calling_fastpipes_collate_still_takes_the_batch_without_a_copy():
    """Grouped per item for a user's collate_fn, the crops still carry the batch the op made, so a
    collate_fn that wraps fp.list_data_collate takes it as it is instead of stacking every crop again."""
    crop = RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=2)
    ds = fp.CacheDataset(items(2), [crop], progress=False, num_workers=1)
    took = []

    def tagged(batch):
        out = fp.list_data_collate(batch)
        took.append(out is batch.collated and [len(it) for it in batch] == [2, 2])
        return {**out, "tag": "mine"}

    batch = next(iter(fp.ThreadDataLoader(ds, batch_size=2, collate_fn=tagged)))
    assert took == [True] and batch["tag"] == "mine" and batch["image"].shape == (4, 1, *PATCH)


def check_windows_of(ds: fp.CacheDataset, batch: dict, first: int, samples: int) -> None:
    """:func:`check_windows` for ``samples`` crops per item."""
    for n in range(batch["image"].shape[0]):
        x, y, z = (int(v) for v in batch["crop_starts"][n])
        src = ds.cached_entry(first + n // samples)
        for key in KEYS:
            window = src[key][:, x : x + PATCH[0], y : y + PATCH[1], z : z + PATCH[2]]
            assert torch.equal(torch.as_tensor(batch[key][n]), window), (key, n)


def _cached(cls: str, data: list, chain, **kw):
    """A fastpipe cache dataset of every item: ``CacheDataset``, or a ``SmartCacheDataset`` whose window
    holds them all in order."""
    if cls == "CacheDataset":
        return fp.CacheDataset(data, chain, progress=False, num_workers=1, **kw)
    return fp.SmartCacheDataset(data, chain, cache_rate=1.0, shuffle=False, progress=False, **kw)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cls", ["CacheDataset", "SmartCacheDataset"])
@pytest.mark.parametrize("path", ["item", "batched-crop"])
def test_invertd_over_a_translated_random_flip_raises_naming_translate_false(path, cls):
    """A translated RandFlipd (alone, or fused into the batched crop) traced nothing: MONAI's Invertd
    only warned that the transform info was not available and returned the prediction still flipped,
    where MONAI's chain unflips it. Now the inverse raises naming translate=False, which inverts as MONAI."""
    from monai.data import decollate_batch

    flip = M.RandFlipd(KEYS, prob=1.0, spatial_axis=0)
    steps = (
        [flip] if path == "item" else [M.RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=2), flip]
    )
    inv = M.Invertd("pred", transform=M.Compose(steps), orig_keys="image", nearest_interp=False)

    def first_inverted(translate: bool):
        ds = _cached(cls, items(2), M.Compose(steps), translate=translate)
        batch = fp.list_data_collate(ds.__getitems__([0]))
        batch["pred"] = batch["image"] * 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return inv(decollate_batch(batch)[0])

    read = _cached(cls, items(1), M.Compose(steps))[0]
    assert "image_transforms" in (read if isinstance(read, dict) else read[0])  # ds[i] too
    with pytest.raises(RuntimeError) as info:
        first_inverted(True)
    assert "translate=False" in f"{info.value} {info.value.__cause__}"
    out = first_inverted(False)  # MONAI's own chain: the prediction unflipped
    assert torch.equal(torch.as_tensor(out["pred"]).flip(1), torch.as_tensor(out["image"]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("dataset", ["fp-translate-False", "fp-smartcache-translate-False", "monai-Dataset"])
def test_invertd_undoes_monais_random_flip_read_through_the_thread_loader(dataset, num_workers):
    """fp.ThreadDataLoader reads through per-thread copies of the random transforms (fetch_seeded's,
    or a MONAI dataset's with fetch threads); MONAI's trace records id(self) of the copy, so Invertd,
    given the user's chain, raised "RandFlipd ... != ..." where MONAI's loaders invert it: the path
    the docs name for inverting (translate=False) failed. The records now name the user's transforms."""
    from monai.data import decollate_batch

    flip = M.RandFlipd(KEYS, prob=1.0, spatial_axis=0)
    chain = M.Compose([M.RandSpatialCropd(KEYS, PATCH, random_size=False), flip])
    if dataset == "monai-Dataset":
        ds = monai.data.Dataset(items(4), chain)
    else:
        ds = _cached(
            "SmartCacheDataset" if "smartcache" in dataset else "CacheDataset",
            items(4),
            chain,
            translate=False,
        )
    inv = M.Invertd("pred", transform=chain, orig_keys="image", nearest_interp=False)
    sources = [d["image"] for d in items(4)]
    inverted = 0
    for batch in fp.ThreadDataLoader(ds, batch_size=2, num_workers=num_workers):
        batch["pred"] = batch["image"] * 2.0
        for out in [inv(d) for d in decollate_batch(batch)]:
            pred, src = torch.as_tensor(out["pred"]), sources[inverted]
            assert pred.shape == src.shape  # back in the item's space: uncropped, unflipped
            window = pred != 0
            assert int(window.sum()) == np.prod(PATCH) and torch.equal(pred[window], 2 * src[window])
            inverted += 1
    assert inverted == 4


@pytest.mark.timeout(120)
def test_a_random_split_of_a_cache_dataset_reads_its_crops_from_the_loaders_seed():
    """Over a Subset (random_split) of a CacheDataset, fp.ThreadDataLoader read through the dataset's
    shared random state: with fetch threads the crops depended on which thread took the lock first
    (another run, other crops), and seed= changed nothing. A split now reads as its dataset does."""
    ds = fp.CacheDataset(
        items(12), [RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=2)], progress=False, seed=1
    )
    order = [7, 2, 9, 0, 11, 4, 5, 1]
    split = torch.utils.data.Subset(torch.utils.data.Subset(ds, list(range(12))), order)

    def starts(d, num_workers, **kw):
        loader = fp.ThreadDataLoader(d, batch_size=1, num_workers=num_workers, seed=5, **kw)
        return [b["crop_starts"].tolist() for b in loader]

    want = starts(ds, 0, sampler=order)
    assert all(starts(split, n) == want for n in (0, 4, 4, 4))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wrap", ["random_split", "ConcatDataset"])
def test_persistent_workers_over_a_split_see_set_data(wrap):
    """With persistent_workers the next epoch is read ahead; a set_data on the CacheDataset under a
    Subset (random_split) or ConcatDataset went unseen, so the next epoch gave the old data's items."""
    import time

    def data(v):
        return [{"x": torch.full((2,), float(v))} for _ in range(4)]

    ds = fp.CacheDataset(data(1), None, progress=False)
    if wrap == "random_split":
        view = torch.utils.data.random_split(ds, [4, 0])[0]
    else:
        view = torch.utils.data.ConcatDataset([ds])
    loader = fp.ThreadDataLoader(view, batch_size=2, persistent_workers=True)
    try:
        assert [float(b["x"][0, 0]) for b in loader] == [1.0, 1.0]
        deadline = time.monotonic() + 10
        while loader._next is None and time.monotonic() < deadline:  # the next epoch read ahead
            time.sleep(0.01)
        ds.set_data(data(2))
        assert [float(b["x"][0, 0]) for b in loader] == [2.0, 2.0]
    finally:
        loader.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("wrap", ["ConcatDataset", "split-of-ConcatDataset"])
def test_joined_cache_datasets_read_their_crops_from_the_loaders_seed(wrap):
    """Over a ConcatDataset of CacheDatasets each item was read through its dataset's one shared
    random state: with fetch threads the crops depended on which thread read first (runs differed)."""

    def crops(num_workers):
        parts = [
            fp.CacheDataset(
                items(4),
                [RandCropByPosNegLabeld(KEYS, "label", PATCH, num_samples=2)],
                progress=False,
                seed=s,
            )
            for s in (1, 2)
        ]
        ds = torch.utils.data.ConcatDataset(parts)
        if wrap != "ConcatDataset":
            ds = torch.utils.data.Subset(ds, [7, 0, 5, 2, 3, 6, 1, 4])
        loader = fp.ThreadDataLoader(ds, batch_size=4, num_workers=num_workers, seed=5)
        return [b["image"].flatten(1).sum(1).tolist() for b in loader]

    want = crops(0)
    assert len(want) == 2 and len(want[0]) == 4 * 2  # two crops per item
    assert all(crops(n) == want for n in (4, 4, 4, 4))


@pytest.mark.timeout(60)
def test_the_ragged_crops_hint_gives_a_collate_that_pads_them():
    """Crops of different sizes after a num_samples crop: the error named pad_list_data_collate, which
    (handed one list of crops per item, as MONAI's loaders and now fastpipe's hand a collate_fn) pads
    nothing and fails as under MONAI; the hint now gives the flattening collate_fn that pads them."""
    from monai.data import pad_list_data_collate

    chain = M.Compose(
        [
            M.RandCropByPosNegLabeld(KEYS, "label", (10, 10, 8), num_samples=2),
            M.RandSpatialCropd(KEYS, (4, 4, 4), random_size=True),
        ]
    )
    ds = fp.CacheDataset(items(2), chain, progress=False, seed=0)
    with pytest.raises(ValueError, match=r"pad_list_data_collate\(\[c for item in b for c in item\]\)"):
        next(iter(fp.ThreadDataLoader(ds, batch_size=2, seed=0)))
    hinted = fp.ThreadDataLoader(
        ds, batch_size=2, seed=0, collate_fn=lambda b: pad_list_data_collate([c for item in b for c in item])
    )
    assert next(iter(hinted))["image"].shape[:2] == (4, 1)
