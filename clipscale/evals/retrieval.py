"""Zero-shot image-text retrieval with several captions per image, as CLIP_benchmark computes it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clipscale.errors import ClipscaleError
from clipscale.evals.datasets import EvalDataset
from clipscale.evals.embed import Embedder
from clipscale.evals.metrics import retrieval_recalls


@dataclass
class ZeroShotRetrieval:
    """image_retrieval_recall@k and text_retrieval_recall@k for k in `recall_k`."""

    recall_k: tuple[int, ...] = (1, 5, 10)

    def __post_init__(self) -> None:
        self.recall_k = tuple(int(k) for k in self.recall_k)
        if not self.recall_k or any(k < 1 for k in self.recall_k):
            raise ClipscaleError(f"recall_k must be positive integers; got {list(self.recall_k)}")

    def evaluate(self, bundle: Embedder, dataset: EvalDataset) -> dict[str, float]:
        if dataset.kind != "retrieval" or dataset.captions is None:
            raise ClipscaleError(f"{dataset.source}: zero-shot retrieval needs captions "
                                 f"(dataset type is {dataset.kind!r})")
        feats = bundle.image_features(dataset)
        kept = [caps for caps, ok in zip(dataset.captions, feats.valid) if ok]
        texts = [c for caps in kept for c in caps]
        owner = torch.tensor([i for i, caps in enumerate(kept) for _ in caps], dtype=torch.long)
        text_feats = bundle.text_features(texts)
        return retrieval_recalls(text_feats, feats.features, owner, self.recall_k)
