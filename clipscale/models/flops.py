"""Parameters and forward GMACs of one sample, counted by tracing the real model.

The model is built on the meta device (no memory, so ViT-bigG-14 costs nothing) and run once through
`torch.utils.flop_counter.FlopCounterMode` with one image at the model's image size and one caption of
its context length. FlopCounterMode reports FLOPs = 2 x MACs; we report MACs (the paper's unit).

Attention: the paper counts the attention matmuls (QK^T and AV). PyTorch's fused kernels can hide
them from the counter (nn.MultiheadAttention's eval fast path; the CPU flash kernel of
scaled_dot_product_attention has no registered formula). We therefore trace with the math SDPA backend
on the meta device, where attention decomposes into counted bmm ops, and also register the SDPA
formula for the CPU flash kernel in case a model calls it directly. tests/test_models_flops.py checks
every architecture of the paper's arch_info.csv to within 1 %.

Written here rather than taken from a library: fvcore (the paper's counter) is unmaintained and
traces through TorchScript; torch's own counter is the maintained tool, and this module only adds
model building, tower split and the paper's compute unit around it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from clipscale.errors import ClipscaleError

MACS_PER_FLOP = 0.5  # FlopCounterMode counts a multiply-accumulate as 2 FLOPs
TRAIN_FLOPS_PER_GMAC = 6e9  # fwd + bwd = 3x forward MACs, 2 FLOPs per MAC, GMACs -> MACs


@dataclass(frozen=True)
class FlopsReport:
    """One sample's forward cost (GMACs) and parameter counts (millions), total and per tower.

    Key names follow ../shared/paper/arch_info.csv; text_mparams is everything outside `visual`
    (token/positional embeddings, transformer, projection, logit_scale), as in the paper's table.
    CoCa's multimodal text decoder runs on every training sample (its captioning loss), so its
    forward cost is part of `gmacs`; it is reported apart (`decoder_*`, zero for other models) and
    left out of `text_mparams`. `mparams_nonemb` is `mparams` without the embedding tables
    (`embedding_parameter_names`): the N of scaling laws in model size (Kaplan et al. 2020).
    """

    model: str
    gmacs: float
    image_gmacs: float
    text_gmacs: float
    mparams: float
    image_mparams: float
    text_mparams: float
    image_size: int
    context_length: int
    mparams_nonemb: float
    decoder_gmacs: float = 0.0
    decoder_mparams: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolved_config(name: str, image_size: int | None, context_length: int | None) -> dict[str, Any]:
    from clipscale.models.registry import model_config

    cfg = copy.deepcopy(model_config(name))  # raises ClipscaleError listing valid names
    if image_size is not None:
        cfg["vision_cfg"]["image_size"] = image_size
    if context_length is not None:
        cfg["text_cfg"]["context_length"] = context_length
    return cfg


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Silence open_clip's root-logger 'No pretrained weights loaded' warning while building."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _build_on_meta(name: str, cfg: dict[str, Any]) -> torch.nn.Module:
    """The real model's modules with meta tensors: shapes only, no memory, no initialisation cost."""
    from clipscale.models.registry import build_from_config, is_ladder

    with torch.device("meta"), _quiet_logging():
        if is_ladder(name):
            return build_from_config(name, cfg)
        import open_clip

        return open_clip.create_model(
            name,
            pretrained=None,
            device="meta",
            force_image_size=cfg["vision_cfg"]["image_size"],
            force_context_length=cfg["text_cfg"].get("context_length"),
            pretrained_image=False,
            pretrained_text=False,
        )


def _sdpa_cpu_flash_flop(query_shape: Any, key_shape: Any, value_shape: Any, *_: Any, **__: Any) -> int:
    """QK^T + AV FLOPs for aten._scaled_dot_product_flash_attention_for_cpu (not in torch's registry)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _counter() -> Any:
    from torch.utils.flop_counter import FlopCounterMode

    # custom_mapping formulas receive shapes (FlopCounterMode wraps them like its own formulas)
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flash_flop}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def _forward_gmacs(fn: Any, arg: torch.Tensor) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # Grad stays enabled: on meta it costs nothing, keeps MHA off its uncounted fast path, and timm
    # towers (SigLIP) trip FlopCounterMode's module tracker under no_grad.
    with sdpa_kernel([SDPBackend.MATH]), _counter() as counter:
        fn(arg)
    return counter.get_total_flops() * MACS_PER_FLOP / 1e9


# Tracing on meta runs PyTorch's Python meta kernels (~0.1 s per block); many models share a tower
# (the paper's ViT-H/g at 224 and 336 px share one text tower), so tower counts are cached by the
# model class and every config field except the other tower's (those cannot change this tower).
_TOWER_GMACS: dict[str, float] = {}


def _tower_gmacs(model: torch.nn.Module, cfg: dict[str, Any], tower: str, arg: torch.Tensor) -> float:
    other = "text_cfg" if tower == "image" else "vision_cfg"
    fields = {k: v for k, v in cfg.items() if k != other}
    key = json.dumps([tower, type(model).__qualname__, fields], sort_keys=True, default=repr)
    if key not in _TOWER_GMACS:
        fn = model.encode_image if tower == "image" else model.encode_text
        _TOWER_GMACS[key] = _forward_gmacs(fn, arg)
    return _TOWER_GMACS[key]


def _decoder_gmacs(model: torch.nn.Module, cfg: dict[str, Any], image: torch.Tensor,
                   text: torch.Tensor) -> float:
    """CoCa's text decoder as its training forward calls it: cross-attending the image tokens, over
    the caption's token embeddings but the last (teacher forcing, as open_clip's CoCa.forward)."""
    key = json.dumps(["decoder", type(model).__qualname__, cfg], sort_keys=True, default=repr)
    if key not in _TOWER_GMACS:
        _, image_embs = model.visual(image)  # shapes only: meta tensors, outside the counter
        _, token_embs = model.text(text)
        _TOWER_GMACS[key] = _forward_gmacs(lambda embs: model.text_decoder(image_embs, embs),
                                           token_embs[:, :-1])
    return _TOWER_GMACS[key]


def _mparams(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


# Parameters (by their last name component) that hold positions or a learned input token, not a layer:
# open_clip's `positional_embedding` (text, ViT, ModifiedResNet's attention pool) and ViT
# `class_embedding`; timm's `pos_embed` and `cls_token`.
POSITIONAL_PARAMETERS = ("positional_embedding", "class_embedding", "pos_embed", "cls_token")


def embedding_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the token and positional embedding parameters: every `nn.Embedding`'s table (the text
    token embedding; Hugging Face towers' position/type tables) and every POSITIONAL_PARAMETERS entry.
    Patch embeddings (a convolution over pixels) and projections are layers and stay counted.

    Why: a 49408-row token embedding is 97-99 % of a tiny BPE model's parameters and is a lookup,
    not compute; laws in N count the rest (non-embedding parameters, Kaplan et al. 2020)."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding):
            names.update(f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False))
    names.update(n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in POSITIONAL_PARAMETERS)
    return names


def nonembedding_mparams(model: torch.nn.Module) -> float:
    """Millions of parameters without token and positional embeddings (`params_nonemb`)."""
    skip = embedding_parameter_names(model)
    return sum(p.numel() for n, p in model.named_parameters() if n not in skip) / 1e6


def count_flops(name: str, *, image_size: int | None = None,
                context_length: int | None = None) -> FlopsReport:
    """Forward GMACs and parameters of model `name` for one image + one caption.

    `image_size`/`context_length` override the model's own (like open_clip's force_image_size), e.g.
    `count_flops("ViT-H-14", image_size=336)` is the paper's ViT-H-14-336. Results are cached.
    """
    return _count_flops(name, image_size, context_length)


@functools.lru_cache(maxsize=256)
def _count_flops(name: str, image_size: int | None, context_length: int | None) -> FlopsReport:
    cfg = _resolved_config(name, image_size, context_length)
    size = cfg["vision_cfg"]["image_size"]
    size = int(size if isinstance(size, int) else size[0])
    ctx = int(cfg["text_cfg"].get("context_length", 77))
    try:
        model = _build_on_meta(name, cfg)
    except (RuntimeError, ImportError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClipscaleError(f"cannot count FLOPs of model {name!r}: building it failed: {first}") from exc
    model.eval()  # no dropout / patch dropout: the paper counts the full forward
    image = torch.empty(1, 3, size, size, device="meta")
    text = torch.zeros(1, ctx, dtype=torch.long, device="meta")
    image_gmacs = _tower_gmacs(model, cfg, "image", image)
    text_gmacs = _tower_gmacs(model, cfg, "text", text)
    decoder = getattr(model, "text_decoder", None)  # CoCa's multimodal decoder
    decoder_gmacs = 0.0 if decoder is None else _decoder_gmacs(model, cfg, image, text)
    decoder_mparams = 0.0 if decoder is None else _mparams(decoder)
    mparams = _mparams(model)
    image_mparams = _mparams(model.visual)
    return FlopsReport(
        model=name,
        gmacs=image_gmacs + text_gmacs + decoder_gmacs,
        image_gmacs=image_gmacs,
        text_gmacs=text_gmacs,
        mparams=mparams,
        image_mparams=image_mparams,
        text_mparams=mparams - image_mparams - decoder_mparams,
        image_size=size,
        context_length=ctx,
        mparams_nonemb=nonembedding_mparams(model),
        decoder_gmacs=decoder_gmacs,
        decoder_mparams=decoder_mparams,
    )


def run_compute(model_or_gmacs: str | float, samples_seen: float) -> float:
    """The paper's compute C of a run: forward GMACs per sample x samples seen (not training FLOPs)."""
    if isinstance(model_or_gmacs, str):
        gmacs = count_flops(model_or_gmacs).gmacs
    else:
        gmacs = float(model_or_gmacs)
        if not gmacs > 0:
            raise ClipscaleError(f"gmacs per sample must be > 0, got {model_or_gmacs!r}")
    if not samples_seen >= 0:
        raise ClipscaleError(f"samples_seen must be >= 0, got {samples_seen!r}")
    return gmacs * float(samples_seen)


def train_flops(compute: float) -> float:
    """Training FLOPs of a run of compute C (GMACs): forward + backward = 3x MACs, 2 FLOPs per MAC."""
    return TRAIN_FLOPS_PER_GMAC * float(compute)
