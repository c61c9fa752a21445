"""Metric functions against hand-computed values on tiny hand-built cases, ties included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipscale.evals.metrics import (
    average_precision_per_class,
    classification_accuracies,
    mean_per_class_recall,
    recall_at_k,
    retrieval_recalls,
    topk_accuracy,
)


def test_topk_accuracy_hand_computed() -> None:
    logits = torch.tensor([
        [0.9, 0.1, 0.0, 0.3, 0.2, 0.4],  # ranking 0,5,3,4,1,2
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # ranking 5,4,3,2,1,0
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # ranking 0,1,2,3,4,5
    ])
    targets = torch.tensor([0, 1, 5])
    # sample 0: top1 hit; sample 1: class 1 ranks 5th -> top5 hit only; sample 2: class 5 ranks 6th
    assert topk_accuracy(logits, targets, (1, 5)) == pytest.approx([1 / 3, 2 / 3])
    acc1, acc5 = classification_accuracies(logits, targets)
    assert (acc1, acc5) == pytest.approx((1 / 3, 2 / 3))


def test_acc5_is_nan_below_five_classes() -> None:
    acc1, acc5 = classification_accuracies(torch.tensor([[0.1, 0.9, 0.0, 0.0]]), torch.tensor([1]))
    assert acc1 == 1.0 and math.isnan(acc5)


def test_mean_per_class_recall_is_balanced_accuracy() -> None:
    y = np.array([0, 0, 0, 1, 2, 2])
    p = np.array([0, 1, 0, 1, 0, 3])  # class 3 only predicted: no recall defined, left out
    # recalls: class 0 = 2/3, class 1 = 1/1, class 2 = 0/2
    assert mean_per_class_recall(y, p) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_tied_logits_follow_topk_for_accuracy_and_argmax_for_recall() -> None:
    """CLIP_benchmark scores acc1 with topk and mean_per_class_recall with argmax; on exact ties
    they may pick different tied classes. On this torch build topk picks column 2, argmax column 1."""
    logits = torch.tensor([[0.0, 3.0, 3.0, 1.0, 3.0]])
    target = torch.tensor([1])
    acc1, acc5 = classification_accuracies(logits, target)
    assert acc1 == 0.0 and acc5 == 1.0
    assert mean_per_class_recall(target.numpy(), logits.argmax(1).numpy()) == 1.0


def test_average_precision_hand_computed() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    targets = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]])
    ap = average_precision_per_class(scores, targets)
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1 has no positive -> 0
    assert ap.tolist() == pytest.approx([(1 + 2 / 3) / 2, 0.0])
    assert ap.mean().item() == pytest.approx((1 + 2 / 3) / 4)


def _clip_benchmark_recall(scores: torch.Tensor, positives: torch.Tensor, k: int) -> torch.Tensor:
    """CLIP_benchmark's one-hot formulation (metrics/zeroshot_retrieval.py), re-typed for comparison."""
    n, m = scores.shape
    top = torch.topk(scores, k, dim=1)[1]
    onehot = torch.nn.functional.one_hot(top, num_classes=m)
    true_pos = (onehot * positives.view(n, 1, m)).sum(dim=(1, 2))
    return (true_pos / positives.sum(dim=1)) > 0


def test_multi_caption_retrieval_hand_computed() -> None:
    # with identity image features, text features ARE the text x image score rows (no ties here)
    images = torch.eye(3)
    texts = torch.tensor([
        [0.9, 0.5, 0.1],  # caption of image 0: image 0 ranks 1st
        [0.2, 0.8, 0.4],  # caption of image 0: image 0 ranks 3rd
        [0.3, 0.6, 0.7],  # caption of image 1: ranks 2nd
        [0.7, 0.2, 0.6],  # caption of image 2: ranks 2nd
    ])
    owner = torch.tensor([0, 0, 1, 2])
    m = retrieval_recalls(texts, images, owner, ks=(1, 2, 3))
    assert [m[f"image_retrieval_recall@{k}"] for k in (1, 2, 3)] == pytest.approx([1 / 4, 3 / 4, 1.0])
    # image queries over the 4 captions: image 0's best own caption (0.9) is 1st; image 1's own caption
    # (0.6) is 2nd after 0.8; image 2's (0.6) is 2nd after 0.7 -> any-caption hit rule
    assert [m[f"text_retrieval_recall@{k}"] for k in (1, 2, 3)] == pytest.approx([1 / 3, 1.0, 1.0])


def test_recall_ties_inside_top_k_always_count_and_boundary_ties_follow_topk() -> None:
    scores = torch.tensor([[0.7, 0.7, 0.1], [0.5, 0.9, 0.9]])
    positives = torch.tensor([[False, True, False], [True, False, False]])
    # row 0: positive tied for the top two -> in the top 2 whatever the order
    assert recall_at_k(scores, positives, 2)[0] == 1.0
    # row 1, k=1 or 2: the positive scores below two tied items -> miss; k=3 -> hit
    assert recall_at_k(scores, positives, 2)[1] == 0.0 and recall_at_k(scores, positives, 3)[1] == 1.0
    # boundary tie: [0.2, 0.7, 0.7, 0.1], positive at column 2, k=1: torch.topk picks column 1 here,
    # so CLIP_benchmark (and clipscale) count a miss
    boundary = torch.tensor([[0.2, 0.7, 0.7, 0.1]])
    assert recall_at_k(boundary, torch.tensor([[False, False, True, False]]), 1) == 0


def test_recall_equals_clip_benchmark_formulation_on_tie_heavy_scores() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (40, 25), generator=gen).float()  # many exact ties
    positives = torch.zeros(40, 25, dtype=torch.bool)
    positives[torch.arange(40), torch.randint(0, 25, (40,), generator=gen)] = True
    for k in (1, 5, 10):
        ours = recall_at_k(scores, positives, k, chunk=7)  # chunking must not matter
        assert torch.equal(ours.bool(), _clip_benchmark_recall(scores, positives, k))
        assert torch.equal(recall_at_k(scores.t(), positives.t(), k).bool(),
                           _clip_benchmark_recall(scores.t(), positives.t(), k))


def test_recall_k_larger_than_candidates_is_clamped() -> None:
    assert recall_at_k(torch.tensor([[0.1, 0.2]]), torch.tensor([[True, False]]), 10).item() == 1.0
