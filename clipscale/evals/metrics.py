"""Metric functions, defined exactly as CLIP_benchmark defines them (docs/metrics.md has the maths).

Pure functions of tensors. Written here rather than imported because CLIP_benchmark's versions are
tied to its dataloaders (and pull scikit-learn); where its result depends on how `torch.topk` /
`torch.sort` order tied scores, these call the same torch function with the same arguments, so tie
handling is identical, not just similar.
"""

from __future__ import annotations

import numpy as np
import torch


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...]) -> list[float]:
    """Fraction of rows whose target is among the top-k columns, one value per k.

    Like CLIP_benchmark's `accuracy`, a single `topk(max(ks), sorted=True)` ranks every row; on tied
    logits the choice of which tied column ranks first is torch.topk's.
    """
    pred = logits.topk(max(ks), 1, True, True)[1].t()
    correct = pred.eq(targets.view(1, -1).expand_as(pred))
    n = len(targets)
    return [float(correct[:k].reshape(-1).float().sum()) / n for k in ks]


def classification_accuracies(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(acc1, acc5); acc5 is NaN (written as null) with fewer than 5 classes, as in CLIP_benchmark.

    With >= 5 classes acc1 comes from the same top-5 ranking as acc5 (CLIP_benchmark's call), which
    matters only when the top logits tie.
    """
    if logits.shape[1] >= 5:
        acc1, acc5 = topk_accuracy(logits, targets, (1, 5))
        return acc1, acc5
    (acc1,) = topk_accuracy(logits, targets, (1,))
    return acc1, float("nan")


def mean_per_class_recall(targets: np.ndarray | torch.Tensor, preds: np.ndarray | torch.Tensor) -> float:
    """Balanced accuracy (scikit-learn's `balanced_accuracy_score`, adjusted=False).

    Recall of each class that occurs in `targets`, averaged with equal weight; classes that occur
    only among the predictions have undefined recall and are left out, as scikit-learn does.
    """
    y = np.asarray(targets).astype(np.int64).ravel()
    p = np.asarray(preds).astype(np.int64).ravel()
    recalls = [float(np.mean(p[y == c] == c)) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")


def average_precision_per_class(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Non-interpolated AP of each class column (CLIP_benchmark's multi-label metric).

    Rank samples by descending score (torch.sort, descending); AP = mean over the positives of the
    precision at each positive's rank. A class with no positive gets AP 0 (sum / max(#pos, 1)).
    """
    ap = torch.zeros(scores.size(1))
    ranks = torch.arange(1, scores.size(0) + 1).float()
    for k in range(scores.size(1)):
        _, order = torch.sort(scores[:, k], 0, True)
        truth = targets[:, k][order]
        precision = truth.float().cumsum(0).div(ranks)
        ap[k] = precision[truth.bool()].sum() / max(float(truth.sum()), 1)
    return ap


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int, *, chunk: int = 4096) -> torch.Tensor:
    """Per query (row): 1.0 if any positive column is among the row's top-k scores, else 0.0.

    Equals CLIP_benchmark's `recall_at_k(...) > 0`: same `torch.topk(scores, k, dim=1)` call, so
    the same tied candidates enter the top k. k larger than the number of candidates is clamped to
    it (every positive is then retrieved); CLIP_benchmark would raise instead. Rows are processed in
    chunks to bound memory; topk works row by row, so chunking does not change the result.
    """
    k = min(k, scores.shape[1])
    hits = []
    for start in range(0, scores.shape[0], chunk):
        s, pos = scores[start : start + chunk], positives[start : start + chunk]
        top = torch.topk(s, k, dim=1)[1]
        hits.append(torch.gather(pos, 1, top).any(dim=1).float())
    return torch.cat(hits)


def retrieval_recalls(text_features: torch.Tensor, image_features: torch.Tensor, text_to_image: torch.Tensor,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """image_retrieval_recall@k (each caption queries the images) and text_retrieval_recall@k
    (each image queries the captions; a hit if any of its captions is in the top k).

    Features must already be L2-normalised; scores are their dot products (texts x images).
    """
    scores = text_features @ image_features.t()
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(len(scores)), text_to_image] = True
    out: dict[str, float] = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = recall_at_k(scores, positives, k).mean().item()
        out[f"text_retrieval_recall@{k}"] = recall_at_k(scores.t(), positives.t(), k).mean().item()
    return out
