"""Encode each image set once per checkpoint and share it across tasks; batched text encoding.

Why this module exists: CLIP_benchmark re-decodes and re-encodes a dataset for every task and encodes
class prompts one class at a time. Here

* decoded, preprocessed pixels are kept per (dataset content, preprocessing) in one process-wide
  `PixelCache` (`shared_pixel_cache`, at most PIXEL_CACHE_BYTES, least recently used sets evicted
  first), so every checkpoint of a run, every run of a study evaluated in this process and every model
  with the same preprocessing decode and resize each image once;
* image features are memoised per checkpoint and optionally stored on disk under a key made of the
  checkpoint's content hash (sha256 of the file bytes), the dataset's content hash and the
  preprocessing description; any change to any of them changes the key, so a stale entry can never
  be found (the stored key is also compared on load);
* all prompt texts of a class matrix go through the text tower in a few large batches, cut to the
  longest tokenised text in the batch (`encode_text_trimmed`): captions use ~15 of 77 positions and
  a causal text tower's pooled output does not depend on the padding after it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipscale.errors import ClipscaleError
from clipscale.evals.datasets import EvalDataset, ImageRef
from clipscale.io import atomic_write_bytes

CACHE_VERSION = 1
# Bound of the process-wide pixel cache: preprocessed float32 pixels, e.g. 170k images at 32 px or 3.5k
# at 224 px. A set larger than this is decoded again for each checkpoint instead of being kept.
PIXEL_CACHE_BYTES = 2 << 30


def file_sha256(path: str | os.PathLike) -> str:
    """Content hash of a checkpoint: renaming keeps it, rewriting different bytes changes it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _preprocess_cfg(model: torch.nn.Module, model_config: dict[str, Any]) -> Any:
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = asdict(PreprocessCfg())
    cfg = merge_preprocess_dict(cfg, model_config.get("preprocess_cfg", {}))
    size = getattr(model.visual, "image_size", None) or model_config["vision_cfg"]["image_size"]
    cfg["size"] = tuple(size) if isinstance(size, list | tuple) else size
    return PreprocessCfg(**cfg)


def preprocess_for(model: torch.nn.Module, model_config: dict[str, Any]) -> tuple[Callable, str]:
    """open_clip's eval transform for this model, and a string describing it (part of cache keys).

    Same as `open_clip.create_model_and_transforms(...)[2]` for a model built from this config:
    defaults (OpenAI mean/std, bicubic, shortest-side resize, centre crop) at the tower's image size,
    overridden by a `preprocess_cfg` in the config when there is one.
    """
    import open_clip
    from open_clip.transform import image_transform_v2

    pp = _preprocess_cfg(model, model_config)
    key = json.dumps({"open_clip": open_clip.__version__, **asdict(pp)}, sort_keys=True, default=list)
    return image_transform_v2(pp, is_train=False), key


@dataclass(frozen=True)
class FastDecode:
    """Exact shortcut for images already at the model's input size (the synthetic sets, pre-resized
    benchmark shards): resize and centre crop are then identities, so open_clip's transform reduces
    to ToTensor + Normalize. Decoding with torchvision (libpng) and normalising a whole batch at once
    is ~10x cheaper than PIL + per-image transforms and gives bit-identical tensors (tested).
    Only 8-bit RGB PNGs qualify: lossless, so every decoder yields the same pixels."""

    size: int
    mean: torch.Tensor  # (3, 1, 1)
    std: torch.Tensor

    def decode(self, data: bytes) -> torch.Tensor | None:
        """uint8 (3, H, W) when `data` qualifies, else None (caller takes the PIL path)."""
        if len(data) < 26 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", data[16:24])
        if (width, height) != (self.size, self.size) or data[24] != 8 or data[25] != 2:
            return None
        from torchvision.io import ImageReadMode, decode_image

        try:
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            return None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """The same ops as ToTensor + Normalize, batched: x.float() / 255, then (x - mean) / std."""
        return images.float().div(255).sub_(self.mean).div_(self.std)


def fast_decode_for(model: torch.nn.Module, model_config: dict[str, Any]) -> FastDecode | None:
    pp = _preprocess_cfg(model, model_config)
    size = pp.size if isinstance(pp.size, int) else (pp.size[0] if pp.size[0] == pp.size[1] else None)
    if size is None:
        return None
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float32).view(-1, 1, 1)  # noqa: E731
    return FastDecode(int(size), as_tensor(pp.mean), as_tensor(pp.std))


def _trimmable(model: torch.nn.Module) -> bool:
    """open_clip CLIP with a causal text mask and pooling at a real token (not the last position)."""
    from open_clip.model import CLIP

    return (isinstance(model, CLIP) and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", None) in ("argmax", "eos", "first"))


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text(tokens)`, computed on columns up to the last non-padding token only.

    With a causal mask position i sees positions <= i, and argmax/eos/first pooling reads a position
    inside the text, so dropping trailing padding columns leaves the output unchanged (up to float
    rounding of smaller matmuls). Other models fall back to encode_text.
    """
    from open_clip.transformer import text_global_pool

    nonpad = (tokens != 0).any(dim=0).nonzero()
    if not _trimmable(model) or len(nonpad) == 0:
        return model.encode_text(tokens)
    n = int(nonpad.max()) + 1
    tokens = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is None:
        return x
    return model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) \
        else x @ model.text_projection


def _decode(ref: ImageRef, transform: Callable, fast: FastDecode | None = None
            ) -> tuple[str, torch.Tensor] | None:
    """("fast", uint8 image) or ("pil", preprocessed image); None when unreadable or over the pixel limit
    that training applies too (`data.images.open_image`): skipped, counted."""
    from PIL import Image

    from clipscale.data.images import ImageError, open_image

    data = ref.read()
    if fast is not None and (raw := fast.decode(data)) is not None:
        return "fast", raw
    try:
        with open_image(data) as img:
            img.load()
            return "pil", transform(img)
    except (ImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


@dataclass
class Pixels:
    images: torch.Tensor  # (n_valid, 3, H, W) preprocessed
    valid: np.ndarray  # (N,) bool: which dataset samples decoded

    @property
    def skipped(self) -> int:
        return int((~self.valid).sum())

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()


class PixelCache:
    """Decoded + preprocessed images per (dataset fingerprint, preprocessing), shared by checkpoints.

    The fingerprint is a content hash of the set's files (one split), the preprocessing key open_clip's
    transform description, so an entry is never reused for other data or other pixels. At most
    `max_bytes` are kept in all: the least recently used sets are evicted first, and a set larger than
    `max_bytes` is decoded again when needed instead of being kept.
    """

    def __init__(self, max_bytes: int = PIXEL_CACHE_BYTES, workers: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._store: OrderedDict[tuple[str, str], Pixels] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, dataset: EvalDataset, transform: Callable, preprocess_key: str,
            fast: FastDecode | None = None) -> Pixels:
        key = (dataset.fingerprint, preprocess_key)
        with self._lock:
            if key in self._store:
                self._store.move_to_end(key)
                return self._store[key]
        with ThreadPoolExecutor(self.workers) as pool:  # PIL and libpng decoding release the GIL
            decoded = list(pool.map(lambda ref: _decode(ref, transform, fast), dataset.images))
        valid = np.array([t is not None for t in decoded], dtype=bool)
        kept = [t for t in decoded if t is not None]
        pixels = Pixels(_assemble(kept, fast), valid)
        self._keep(key, pixels)
        return pixels

    def _keep(self, key: tuple[str, str], pixels: Pixels) -> None:
        size = pixels.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            self._store[key] = pixels
            while sum(p.nbytes for p in self._store.values()) > self.max_bytes:
                self._store.popitem(last=False)


_SHARED: PixelCache | None = None


def shared_pixel_cache() -> PixelCache:
    """The process's pixel cache (bounded by PIXEL_CACHE_BYTES), used by every `DatasetStore`."""
    global _SHARED
    if _SHARED is None:
        _SHARED = PixelCache()
    return _SHARED


def _assemble(decoded: list[tuple[str, torch.Tensor]], fast: FastDecode | None) -> torch.Tensor:
    """Stack preprocessed images in dataset order, normalising the fast-path ones in one batch."""
    if not decoded:
        return torch.empty(0)
    fast_rows = [i for i, (kind, _) in enumerate(decoded) if kind == "fast"]
    if not fast_rows:
        return torch.stack([t for _, t in decoded])
    assert fast is not None
    normalized = fast.normalize(torch.stack([decoded[i][1] for i in fast_rows]))
    if len(fast_rows) == len(decoded):
        return normalized
    out = torch.empty((len(decoded), *normalized.shape[1:]), dtype=normalized.dtype)
    out[fast_rows] = normalized
    for i, (kind, t) in enumerate(decoded):
        if kind == "pil":
            out[i] = t
    return out


@dataclass
class ImageFeatures:
    features: torch.Tensor  # (n_valid, D) float32, L2-normalised
    valid: np.ndarray  # (N,) bool

    @property
    def skipped(self) -> int:
        return int((~self.valid).sum())


class Embedder:
    """One checkpoint's encoders with the caches above; what every evaluator receives."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, *, checkpoint_hash: str,
                 model_config: dict[str, Any], device: str = "cpu", batch_size: int = 256,
                 cache_dir: str | os.PathLike | None = None, pixel_cache: PixelCache | None = None) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.checkpoint_hash = checkpoint_hash
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.pixel_cache = pixel_cache or PixelCache()
        self.transform, self.preprocess_key = preprocess_for(model, model_config)
        self.fast_decode = fast_decode_for(model, model_config)
        self._features: dict[str, ImageFeatures] = {}
        self.counts: dict[str, tuple[int, int]] = {}  # dataset fingerprint -> (readable, skipped)
        self.stats = {"image_encodes": 0, "disk_hits": 0, "memory_hits": 0}

    def cache_key(self, dataset: EvalDataset) -> str:
        return json.dumps({"v": CACHE_VERSION, "checkpoint": self.checkpoint_hash,
                           "dataset": dataset.fingerprint, "preprocess": self.preprocess_key})

    def pixels(self, dataset: EvalDataset) -> Pixels:
        pixels = self.pixel_cache.get(dataset, self.transform, self.preprocess_key, self.fast_decode)
        self._count(dataset, pixels.valid)
        return pixels

    def _count(self, dataset: EvalDataset, valid: np.ndarray) -> None:
        n_valid = int(valid.sum())
        if n_valid == 0:
            raise ClipscaleError(f"{dataset.source}: none of the {len(valid)} images could be decoded")
        self.counts[dataset.fingerprint] = (n_valid, len(valid) - n_valid)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        out = [self.model.encode_image(images[i : i + self.batch_size].to(self.device)).float()
               for i in range(0, len(images), self.batch_size)]
        return F.normalize(torch.cat(out), dim=-1).cpu() if out else torch.empty(0)

    def image_features(self, dataset: EvalDataset) -> ImageFeatures:
        """Normalised image features of a dataset: memory, then disk cache, then encode."""
        key = self.cache_key(dataset)
        if key in self._features:
            self.stats["memory_hits"] += 1
            return self._features[key]
        feats = self._load_disk(key)
        if feats is None:
            pixels = self.pixels(dataset)
            feats = ImageFeatures(self.encode_images(pixels.images), pixels.valid)
            self.stats["image_encodes"] += 1
            self._store_disk(key, feats)
        else:
            self.stats["disk_hits"] += 1
            self._count(dataset, feats.valid)
        self._features[key] = feats
        return feats

    def _disk_path(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.pt"

    def _load_disk(self, key: str) -> ImageFeatures | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file is a miss, then overwritten
            return None
        if not isinstance(blob, dict) or blob.get("key") != key:
            return None
        return ImageFeatures(blob["features"], blob["valid"].numpy().astype(bool))

    def _store_disk(self, key: str, feats: ImageFeatures) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        buf = io.BytesIO()
        torch.save({"key": key, "features": feats.features, "valid": torch.from_numpy(feats.valid)}, buf)
        atomic_write_bytes(path, buf.getvalue())

    @torch.inference_mode()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text features, one row per text.

        Each distinct text is encoded once; texts are batched by token length so that trimming
        the padding (`encode_text_trimmed`) leaves little to compute.
        """
        unique = list(dict.fromkeys(texts))
        tokens = self.tokenizer(unique)
        order = torch.argsort((tokens != 0).sum(dim=1), stable=True)
        feats = torch.empty(0)
        for i in range(0, len(unique), self.batch_size):
            idx = order[i : i + self.batch_size]
            out = encode_text_trimmed(self.model, tokens[idx].to(self.device)).float().cpu()
            if feats.numel() == 0:
                feats = torch.empty(len(unique), out.shape[1])
            feats[idx] = out
        row = {t: i for i, t in enumerate(unique)}
        return F.normalize(feats[[row[t] for t in texts]], dim=-1)

    def class_matrix(self, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(C, D): per class, mean of the normalised template embeddings, renormalised."""
        texts = [t.format(c=c) for c in classnames for t in templates]
        feats = self.text_features(texts).view(len(classnames), len(templates), -1)
        weights = feats.mean(dim=1)
        return weights / weights.norm(dim=-1, keepdim=True)
