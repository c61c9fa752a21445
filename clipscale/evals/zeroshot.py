"""Zero-shot classification as CLIP_benchmark computes it (metrics in docs/metrics.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clipscale.evals.datasets import EvalDataset, check_templates
from clipscale.evals.embed import Embedder
from clipscale.evals.metrics import (
    average_precision_per_class,
    classification_accuracies,
    mean_per_class_recall,
)


def zeroshot_logits(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """100 * features @ class matrix^T, in CLIP_benchmark's order of operations (scale first)."""
    return 100.0 * image_features @ classifier.t()


@dataclass
class ZeroShotClassification:
    """acc1, acc5, mean_per_class_recall; mean_average_precision for multi-label sets."""

    def evaluate(self, bundle: Embedder, dataset: EvalDataset) -> dict[str, float]:
        classnames, templates = dataset.require_zeroshot()
        check_templates(dataset.source, templates)
        feats = bundle.image_features(dataset)
        classifier = bundle.class_matrix(classnames, templates)
        logits = zeroshot_logits(feats.features, classifier)
        assert dataset.labels is not None
        target = torch.as_tensor(dataset.labels[feats.valid])
        if dataset.kind == "multilabel":
            return {"mean_average_precision": average_precision_per_class(logits, target).mean().item()}
        acc1, acc5 = classification_accuracies(logits, target)
        recall = mean_per_class_recall(target.numpy(), logits.argmax(dim=1).numpy())
        return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": recall}
