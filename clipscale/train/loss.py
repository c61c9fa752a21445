"""The training loss, chosen by the model's open_clip config, over the global batch.

open_clip's losses are used as is, with open_clip_train's semantics:
- CLIP: `ClipLoss(local_loss=True, gather_with_grad=True)` by default. Each rank scores its own n
  rows against all N gathered features (n x N logits instead of N x N: at batch 32k on 8 ranks,
  4k x 32k per rank). The all-gather keeps its gradient (torch.distributed.nn's backward sums each
  rank's chunk), so after DDP's gradient averaging every parameter gets exactly the gradient of the
  single-process loss over the global batch, as with `local_loss = false`; the mean of the ranks'
  losses is the global loss. tests/test_train_distributed.py and test_train_gpu_fixes.py check both.
- SigLIP (config `init_logit_bias`): `SigLipLoss` with the model's learnt logit_bias.
- CoCa (config `multimodal_cfg`): `CoCaLoss`, contrastive plus captioning on the decoder's logits and
  the shifted token labels, weighted 1 and 2 as open_clip_train's defaults.
"""

from __future__ import annotations

from typing import Any

import torch

CLIP_LOSS_WEIGHT = 1.0  # open_clip_train --coca-contrastive-loss-weight default
CAPTION_LOSS_WEIGHT = 2.0  # open_clip_train --coca-caption-loss-weight default
_TUPLE_KEYS = ("image_features", "text_features", "logit_scale", "logit_bias")


def loss_kind(model_cfg: dict[str, Any] | None) -> str:
    if model_cfg and "multimodal_cfg" in model_cfg:
        return "coca"
    if model_cfg and model_cfg.get("init_logit_bias") is not None:
        return "siglip"
    return "clip"


def make_loss(*, local_loss: bool, rank: int, world_size: int,
              model_cfg: dict[str, Any] | None = None) -> torch.nn.Module:
    from open_clip.loss import ClipLoss, CoCaLoss, SigLipLoss

    kind = loss_kind(model_cfg)
    if kind == "siglip":
        return SigLipLoss(rank=rank, world_size=world_size)
    common = {"local_loss": local_loss, "gather_with_grad": True, "cache_labels": True, "rank": rank,
              "world_size": world_size}
    if kind == "coca":
        return CoCaLoss(caption_loss_weight=CAPTION_LOSS_WEIGHT, clip_loss_weight=CLIP_LOSS_WEIGHT, **common)
    return ClipLoss(**common)


def total_loss(loss_fn: torch.nn.Module, model_out: Any) -> torch.Tensor:
    """Sum of the loss terms for a model's forward output: CLIP and SigLIP return a tuple
    (features, features, scale[, bias]), CoCa a dict with its caption logits and labels."""
    out = model_out if isinstance(model_out, dict) else dict(zip(_TUPLE_KEYS, model_out, strict=False))
    losses = loss_fn(**out, output_dict=True)
    return sum(losses.values())
