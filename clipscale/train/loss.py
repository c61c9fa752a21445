"""Symmetric InfoNCE over the global batch.

open_clip's `ClipLoss` is used as is: with gather_with_grad=True it all-gathers features through
torch.distributed.nn (whose backward sums each rank's gradient chunk: reduce-scatter on NCCL, an
all-to-all on gloo), so after DDP's gradient averaging every parameter gets exactly the gradient of
the single-process loss over the global batch. tests/test_train_distributed.py checks this.
"""

from __future__ import annotations

import torch


def make_loss(*, local_loss: bool, rank: int, world_size: int) -> torch.nn.Module:
    from open_clip.loss import ClipLoss

    return ClipLoss(local_loss=local_loss, gather_with_grad=True, cache_labels=True, rank=rank,
                    world_size=world_size)
