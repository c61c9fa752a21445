"""Linear probe on frozen, L2-normalised image features (multinomial logistic regression).

Fitted with full-batch L-BFGS in torch (CPU or GPU; a strictly convex problem, so the solution does
not depend on batch order or seeds), instead of CLIP_benchmark's AdamW epochs or scikit-learn
(not a dependency). Protocol:

1. a validation split is carved from the *training* split (stratified, seeded; never from test);
2. few-shot (k > 0): k examples per class are drawn (seeded) from what remains of train;
3. the weight decay maximising validation acc1 is chosen from `weight_decays` (default 1e-6 .. 1e2,
   9 values, log-spaced; ties: the smallest);
4. the probe is refitted with it on the training data (full data: train remainder + validation, as
   CLIP_benchmark refits on train+val; few-shot: the k-shot sample) and scored on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipscale.errors import ClipscaleError
from clipscale.evals.datasets import EvalDataset
from clipscale.evals.embed import Embedder
from clipscale.evals.metrics import mean_per_class_recall, topk_accuracy

DEFAULT_WEIGHT_DECAYS = tuple(float(w) for w in np.logspace(-6, 2, 9))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) index arrays: per class, round(n_c * fraction) samples held out (seeded),
    at least one when the class has two or more samples and never all of a class."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_held = min(max(round(len(idx) * fraction), 1 if len(idx) >= 2 else 0), len(idx) - 1)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def fewshot_indices(labels: np.ndarray, k: int, seed: int, *, source: object = "train split") -> np.ndarray:
    """k indices per class drawn without replacement (seeded); error if a class has fewer than k."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise ClipscaleError(f"{source}: {k}-shot probe needs {k} training samples per class; "
                                 f"class {int(c)} has {len(idx)}")
        chosen.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float,
                 max_iter: int = 100, init: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + weight_decay * ||W||^2 (bias unpenalised).

    Starts from zeros or `init` (a warm start along a weight-decay path); the objective is strictly
    convex for weight_decay > 0, so the start changes only how fast the unique optimum is reached.
    """
    w0, b0 = init if init is not None else (torch.zeros(x.shape[1], n_classes, device=x.device),
                                            torch.zeros(n_classes, device=x.device))
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return topk_accuracy(x @ w + b, y, (1,))[0]


@dataclass
class LinearProbe:
    """lp_acc1, lp_mean_per_class_recall, lp_weight_decay (chosen), lp_fewshot_k (0 = all data)."""

    fewshot_k: int = 0
    seed: int = 0
    val_fraction: float = 0.2
    weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS
    max_iter: int = 100

    def __post_init__(self) -> None:
        self.weight_decays = tuple(float(w) for w in self.weight_decays)
        if self.fewshot_k < 0 or not 0 < self.val_fraction < 1 or not self.weight_decays:
            raise ValueError("need fewshot_k >= 0, 0 < val_fraction < 1 and at least one weight decay")

    def _choose_weight_decay(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                             n_classes: int) -> float:
        """Highest validation acc1; ties go to the smallest weight decay. Fits run from the largest
        weight decay down, each warm-started from the previous solution."""
        scores: dict[float, float] = {}
        init = None
        for wd in sorted(self.weight_decays, reverse=True):
            init = fit_logistic(x, y, n_classes, wd, self.max_iter, init)
            scores[wd] = _accuracy(*init, x_val, y_val)
        top = max(scores.values())
        return min(wd for wd, acc in scores.items() if acc == top)

    def evaluate(self, bundle: Embedder, dataset: EvalDataset) -> dict[str, float]:
        train = dataset.require_train("linear probe")
        assert train.labels is not None and dataset.labels is not None
        tr, te = bundle.image_features(train), bundle.image_features(dataset)
        dev = bundle.device
        x, y = tr.features.to(dev), torch.as_tensor(train.labels[tr.valid]).to(dev)
        x_test, y_test = te.features.to(dev), torch.as_tensor(dataset.labels[te.valid]).to(dev)
        n_classes = max(dataset.num_classes(), int(y.max()) + 1, int(y_test.max()) + 1)
        pool, val = stratified_split(y.cpu().numpy(), self.val_fraction, self.seed)
        if len(val) == 0:
            raise ClipscaleError(f"{train.source}: too few training samples to carve a validation split")
        fit = pool if self.fewshot_k == 0 else pool[fewshot_indices(
            y.cpu().numpy()[pool], self.fewshot_k, self.seed, source=train.source)]
        best = self._choose_weight_decay(x[fit], y[fit], x[val], y[val], n_classes)
        final = np.concatenate([pool, val]) if self.fewshot_k == 0 else fit
        w, b = fit_logistic(x[final], y[final], n_classes, best, self.max_iter)
        logits = x_test @ w + b
        return {"lp_acc1": topk_accuracy(logits, y_test, (1,))[0],
                "lp_mean_per_class_recall": mean_per_class_recall(y_test.cpu().numpy(),
                                                                  logits.argmax(1).cpu().numpy()),
                "lp_weight_decay": best, "lp_fewshot_k": self.fewshot_k}
