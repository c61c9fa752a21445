"""The training data path: (seed, step) -> the global batch's samples -> decoded, tokenised tensors.

Semantics (issue 3): only the first `data_size` complete samples of the shards are ever used; a
source of N samples is read in passes, each a permutation seeded by (seed, source, pass); step k
takes stream positions [c(k), c(k+1)) of every source, with c(k) a closed-form function of k
(weighted sources get floor(w * batch * k) samples each). So step k's samples are a pure function
of (seed, k): runs are reproducible, and resuming needs only the step number. Under DDP each rank
decodes its contiguous slice of the same global batch.

A sample that fails to decode (corrupt image, an image over `data.images.MAX_PIXELS` pixels, empty
caption) is replaced by a sample drawn with a generator seeded by (seed, step, slot, attempt), so
batches stay full and deterministic; each failure is counted. Images of any mode become RGB
(`data.images.decode_rgb`, shared with evaluation).

With `augment = "openclip"` each image gets open_clip's training crop (torchvision's
RandomResizedCrop, scale (0.9, 1.0), bicubic) instead of the centre crop; its draw is seeded by
(seed, step, slot), so a resumed run sees exactly the crops of an uninterrupted one.

Workers are torch DataLoader processes, one whole batch per item (decode +
tokenise + collate in the worker, uint8 crossing the process boundary; normalisation happens on
the training device).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clipscale.data.images import ImageError, decode_rgb
from clipscale.data.shard_index import ShardIndex, build_index, expand_spec
from clipscale.errors import ClipscaleError

MAX_ATTEMPTS = 16
AUGMENT_SCALE = (0.9, 1.0)  # open_clip's default training crop (AugmentationCfg.scale)
AUGMENT_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect ratios, as open_clip uses them


class DecodeError(Exception):
    """One sample could not be turned into (image, caption)."""


def build_sources(train_data: str | list[dict[str, Any]], data_size: int | None
                  ) -> list[tuple[ShardIndex, float]]:
    """Index every weighted source; data_size is split between sources in proportion to weight."""
    specs = [{"shards": train_data, "weight": 1.0}] if isinstance(train_data, str) else train_data
    total_w = sum(s["weight"] for s in specs)
    out = []
    for spec in specs:
        share = spec["weight"] / total_w
        limit = None if data_size is None else max(1, round(data_size * share))
        out.append((build_index(expand_spec(spec["shards"]), limit), share))
    return out


class StepSampler:
    """Pure map step -> [(source, sample index)] * batch_size for sources of sizes `sizes`."""

    def __init__(self, sizes: list[int], weights: list[float], batch_size: int, seed: int) -> None:
        if any(w * batch_size < len(sizes) for w in weights):
            raise ClipscaleError(f"train_data: weights {weights} give a source less than {len(sizes)} "
                                 f"samples per batch of {batch_size}; raise the batch or the weight")
        self.sizes, self.weights, self.batch_size, self.seed = sizes, weights, batch_size, seed
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    def cumulative(self, step: int) -> list[int]:
        """Stream positions consumed per source before `step`."""
        total = self.batch_size * step
        counts = [int(np.floor(w * total)) for w in self.weights[:-1]]
        return [*counts, total - sum(counts)]

    def permutation(self, source: int, pass_: int) -> np.ndarray:
        cached = self._perms.get(source)
        if cached is None or cached[0] != pass_:
            rng = np.random.default_rng([self.seed, source, pass_])
            cached = (pass_, rng.permutation(self.sizes[source]))
            self._perms[source] = cached
        return cached[1]

    def step_samples(self, step: int) -> list[tuple[int, int]]:
        lo, hi = self.cumulative(step), self.cumulative(step + 1)
        out: list[tuple[int, int]] = []
        for src, (a, b) in enumerate(zip(lo, hi)):
            n = self.sizes[src]
            out.extend((src, int(self.permutation(src, p // n)[p % n])) for p in range(a, b))
        return out

    def replacement(self, step: int, slot: int, attempt: int, source: int) -> int:
        rng = np.random.default_rng([self.seed, 1_000_003, step, slot, attempt])
        return int(rng.integers(self.sizes[source]))


class SampleReader:
    """Reads one sample's bytes by offset (pread) and decodes it; file handles are per process."""

    def __init__(self, indexes: list[ShardIndex], image_size: int) -> None:
        self.indexes, self.image_size = indexes, image_size
        self._fds: dict[tuple[int, int], int] = {}
        self._pid = os.getpid()

    def _fd(self, source: int, shard: int) -> int:
        if self._pid != os.getpid():  # forked into a worker: never share file offsets/handles
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get((source, shard))
        if fd is None:
            fd = os.open(self.indexes[source].shards[shard], os.O_RDONLY)
            self._fds[(source, shard)] = fd
        return fd

    def read(self, source: int, i: int, crop_seed: int | None = None) -> tuple[torch.Tensor, str]:
        ix = self.indexes[source]
        fd = self._fd(source, int(ix.shard_id[i]))
        img_bytes = os.pread(fd, int(ix.image_size[i]), int(ix.image_offset[i]))
        txt_bytes = os.pread(fd, int(ix.text_size[i]), int(ix.text_offset[i]))
        return decode_image(img_bytes, self.image_size, crop_seed), decode_caption(txt_bytes)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": {}}


def decode_caption(data: bytes) -> str:
    """UTF-8 caption text; undecodable or empty captions are skipped and counted like bad images."""
    try:
        caption = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError("caption is not UTF-8") from exc
    if not caption:
        raise DecodeError("empty caption")
    return caption


def decode_image(data: bytes, size: int, crop_seed: int | None = None) -> torch.Tensor:
    """PNG/JPEG/WebP bytes (any mode) -> uint8 RGB CHW at `size`: bicubic resize of the short side +
    centre crop (open_clip's eval transform), so training and evaluation see the same pixels; with a
    `crop_seed`, open_clip's training crop drawn from that seed instead."""
    import torchvision.transforms.v2.functional as tvf

    try:
        img = decode_rgb(data)
    except ImageError as exc:
        raise DecodeError(str(exc)) from exc
    if crop_seed is not None:
        return random_resized_crop(img, size, crop_seed)
    h, w = img.shape[-2:]
    if (h, w) != (size, size):
        img = tvf.center_crop(tvf.resize(img, size, interpolation=tvf.InterpolationMode.BICUBIC,
                                         antialias=True), [size, size])
    return img


def augment_seed(seed: int, step: int, slot: int) -> int:
    """The crop seed of global batch slot `slot` at `step`: a pure function of (seed, step, slot)."""
    return int(np.random.SeedSequence([seed, 3_000_017, step, slot]).generate_state(1)[0])


def random_resized_crop(img: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """torchvision's RandomResizedCrop with open_clip's training settings, its draw taken from `seed`
    (get_params draws from torch's global generator: forked, so nothing else's randomness moves)."""
    import torchvision.transforms as T
    import torchvision.transforms.v2.functional as tvf

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, h, w = T.RandomResizedCrop.get_params(img, scale=list(AUGMENT_SCALE),
                                                         ratio=list(AUGMENT_RATIO))
    return tvf.resized_crop(img, top, left, h, w, [size, size],
                            interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)


def tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    """Word tokenizers: fill one numpy array (no per-row tensors); any other tokenizer: call it."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        return tokenizer(captions)
    out = np.zeros((len(captions), tokenizer.context_length), dtype=np.int64)
    for row, caption in enumerate(captions):
        ids = encode(caption)
        out[row, : len(ids)] = ids
    return torch.from_numpy(out)


@dataclass
class Batch:
    images: torch.Tensor  # uint8 [b, 3, H, W]
    texts: torch.Tensor  # long [b, context]
    skipped: int  # samples replaced because they failed to decode

    def pin_memory(self) -> Batch:
        return Batch(self.images.pin_memory(), self.texts.pin_memory(), self.skipped)


class StepBatches(torch.utils.data.Dataset):
    """Item k = this rank's slice of step k's global batch, decoded and tokenised."""

    def __init__(self, sampler: StepSampler, reader: SampleReader, tokenizer: Any, rank: int,
                 world_size: int, augment: bool = False) -> None:
        self.sampler, self.reader, self.tokenizer = sampler, reader, tokenizer
        self.rank, self.world_size, self.augment = rank, world_size, augment
        self.local = sampler.batch_size // world_size

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> Batch:
        samples = self.sampler.step_samples(step)
        lo = self.rank * self.local
        images, captions, skipped = [], [], 0
        for slot in range(lo, lo + self.local):
            source, i = samples[slot]
            crop = augment_seed(self.sampler.seed, step, slot) if self.augment else None
            for attempt in range(MAX_ATTEMPTS):
                try:
                    img, cap = self.reader.read(source, i, crop)
                    break
                except DecodeError:
                    skipped += 1
                    i = self.sampler.replacement(step, slot, attempt, source)
            else:
                raise ClipscaleError(f"train_data: {MAX_ATTEMPTS} undecodable samples in a row at step "
                                     f"{step}; are the shards images + captions?")
            images.append(img)
            captions.append(cap)
        return Batch(torch.stack(images), tokenize(self.tokenizer, captions), skipped)


def make_loader(dataset: torch.utils.data.Dataset, start: int, stop: int, *, workers: int, pin_memory: bool
                ) -> torch.utils.data.DataLoader:
    """Batches for steps start..stop-1, in order; `workers` processes decode ahead.

    A StepBatches is indexed by step; a streaming dataset (data/stream.py) is told its start step
    and yields batches in step order (the DataLoader takes them round-robin from its workers)."""
    streaming = isinstance(dataset, torch.utils.data.IterableDataset)
    if streaming:
        dataset.start_step = start  # type: ignore[attr-defined]
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=None if streaming else range(start, stop),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_ignore_stop_signals,
    )


def _ignore_stop_signals(worker_id: int) -> None:
    """SLURM signals every process of a job: workers leave stopping to the training process,
    which checkpoints and then shuts them down (they also exit when their parent dies)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
