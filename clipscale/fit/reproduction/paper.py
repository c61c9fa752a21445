"""The paper's (Cherti et al. 2023) published tables: loading them, one target's rows with E = 1 - metric,
and the joint law's inputs of its runs. Shared by the reproduction and its figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clipscale.errors import ClipscaleError

DEFAULT_TARGETS = ("imagenet1k", "mscoco_captions", "flickr30k")
PREDICTION_TARGETS = ("imagenet1k", "mscoco_captions")
PREDICTION_ARCHS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-g-14", "ViT-G-14")
SAMPLES = {
    "1B": 1_000_000_000,
    "3B": 80_000_415 * 32,
    "13B": 407_332_084 * 32,
    "34B": 407_332_084 * 84,
    "68B": 2 * 407_332_084 * 84,
}
# Unique samples per upstream dataset: the nominal sizes the authors use in their figures notebook.
UNIQUE = {"LAION-80M": 80e6, "LAION-400M": 400e6, "LAION-2B": 2e9}
HOLDOUT_ARCHS = ("ViT-H-14", "ViT-g-14")
OPENAI = "CLIP-WIT"


def metric_for(target: str) -> str:
    if target in ("mscoco_captions", "flickr30k", "flickr8k"):
        return "image_retrieval_recall@5"
    if target == "voc2007_multilabel":
        return "mean_average_precision"
    return "acc1"


def load_paper(data: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    data = Path(data)
    files = {n: data / f"{n}.csv" for n in ("zeroshot_results", "arch_info")}
    for p in files.values():
        if not p.is_file():
            raise ClipscaleError(
                f"{p}: missing; --data must be the paper's table directory (e.g. ../shared/paper)"
            )
    return pd.read_csv(files["zeroshot_results"]), pd.read_csv(files["arch_info"])


def target_rows(results: pd.DataFrame, target: str) -> pd.DataFrame:
    rows = results[results.downstream_dataset == target].copy()
    if rows.empty:
        valid = ", ".join(sorted(results.downstream_dataset.unique()))
        raise ClipscaleError(f"target {target!r} is not a downstream_dataset; valid: {valid}")
    m = metric_for(target)
    if rows[m].isna().any():
        raise ClipscaleError(f"target {target!r}: column {m} has missing values")
    rows["E"] = 1.0 - rows[m]
    rows["source"] = np.where(rows.upstream_dataset == OPENAI, "openai", "openclip")
    return rows.reset_index(drop=True)


def joint_inputs(runs: pd.DataFrame) -> dict[str, np.ndarray]:
    """The joint law's inputs of the paper's runs: N = GMACs, U = nominal dataset size, S = samples seen."""
    return {
        "N": runs.gmacs.to_numpy(),
        "U": runs.upstream_dataset.map(UNIQUE).to_numpy(),
        "S": runs.samples_seen.to_numpy(),
    }
