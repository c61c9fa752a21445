"""End-to-end fine-tuning: a copy of the image tower plus a linear head, trained for a few epochs.

The paper fine-tunes on ImageNet; this is the same recipe at laptop scale (AdamW, cosine schedule,
no augmentation, fp32), on a training split's preprocessed pixels, scored on the test split. The
checkpoint's own weights are never modified (the tower is deep-copied).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipscale.evals.datasets import EvalDataset
from clipscale.evals.embed import Embedder
from clipscale.evals.metrics import mean_per_class_recall, topk_accuracy


@dataclass
class FineTune:
    """ft_acc1 and ft_mean_per_class_recall on the test split after `epochs` of training."""

    epochs: int = 3
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("need epochs >= 1, batch_size >= 1 and lr > 0")

    def _train(self, tower: torch.nn.Module, head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor,
               device: str) -> None:
        params = [*tower.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        steps = self.epochs * math.ceil(len(x) / self.batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        gen = torch.Generator().manual_seed(self.seed)
        tower.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), self.batch_size):
                idx = order[i : i + self.batch_size]
                loss = F.cross_entropy(head(tower(x[idx].to(device))), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()

    def evaluate(self, bundle: Embedder, dataset: EvalDataset) -> dict[str, float]:
        train = dataset.require_train("fine-tuning")
        assert train.labels is not None and dataset.labels is not None
        tr, te = bundle.pixels(train), bundle.pixels(dataset)
        y = torch.as_tensor(train.labels[tr.valid])
        y_test = torch.as_tensor(dataset.labels[te.valid])
        n_classes = max(dataset.num_classes(), int(y.max()) + 1, int(y_test.max()) + 1)
        torch.manual_seed(self.seed)
        tower = copy.deepcopy(bundle.model.visual).float().to(bundle.device)
        with torch.no_grad():
            dim = tower(tr.images[:1].to(bundle.device)).shape[-1]
        head = torch.nn.Linear(dim, n_classes).to(bundle.device)
        with torch.enable_grad():
            self._train(tower, head, tr.images, y, bundle.device)
        tower.eval()
        with torch.inference_mode():
            logits = torch.cat([head(tower(te.images[i : i + 256].to(bundle.device))).cpu()
                                for i in range(0, len(te.images), 256)])
        return {"ft_acc1": topk_accuracy(logits, y_test, (1,))[0],
                "ft_mean_per_class_recall": mean_per_class_recall(y_test.numpy(), logits.argmax(1).numpy())}
