"""Linear probe (validation split, few-shot sampling, weight-decay choice) and fine-tuning."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clipscale.errors import ClipscaleError
from clipscale.evals import evaluate_checkpoint, load_suite
from clipscale.evals.datasets import EvalDataset, ImageRef
from clipscale.evals.embed import ImageFeatures
from clipscale.evals.linear_probe import LinearProbe, fewshot_indices, stratified_split
from tests.test_evals_runner import save_tiny


def test_stratified_split_is_seeded_disjoint_and_per_class() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    keep, held = stratified_split(labels, 0.2, seed=3)
    assert set(keep).isdisjoint(held) and sorted([*keep, *held]) == list(range(16))
    assert [int((labels[held] == c).sum()) for c in (0, 1, 2)] == [2, 1, 0]  # round(n*0.2), >=1 if n>=2
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], held)


def test_fewshot_indices_k_per_class_seeded_and_checked() -> None:
    labels = np.array([0, 1, 2] * 6)
    idx = fewshot_indices(labels, 5, seed=0)
    assert np.bincount(labels[idx]).tolist() == [5, 5, 5] and len(set(idx)) == 15
    assert np.array_equal(idx, fewshot_indices(labels, 5, seed=0))
    with pytest.raises(ClipscaleError, match="7-shot probe needs 7 training samples per class; class 0 has"):
        fewshot_indices(labels, 7, seed=0)


class FakeBundle:
    """Stands in for an Embedder: fixed features per dataset name."""

    device = "cpu"

    def __init__(self, feats: dict[str, torch.Tensor]) -> None:
        self.feats = feats

    def image_features(self, ds: EvalDataset) -> ImageFeatures:
        return ImageFeatures(self.feats[ds.name], np.ones(len(ds), dtype=bool))


def _labelled(name: str, labels: np.ndarray) -> EvalDataset:
    return EvalDataset(name, "classification", Path(name), [ImageRef(name)] * len(labels), name,
                       labels=labels, classnames=["a", "b", "c"])


def test_linear_probe_learns_separable_features_and_reports_choice() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(3, 16, generator=gen), dim=-1)

    def sample(n: int) -> tuple[torch.Tensor, np.ndarray]:
        y = np.arange(n) % 3
        x = centers[y] + 0.05 * torch.randn(n, 16, generator=gen)
        return torch.nn.functional.normalize(x, dim=-1), y

    (xtr, ytr), (xte, yte) = sample(90), sample(30)
    test = _labelled("test", yte)
    test.train = _labelled("train", ytr)
    bundle = FakeBundle({"train": xtr, "test": xte})
    full = LinearProbe(weight_decays=(1e-2, 1e-3), max_iter=40).evaluate(bundle, test)
    assert full["lp_acc1"] == 1.0 and full["lp_mean_per_class_recall"] == 1.0
    # both weight decays reach validation acc1 = 1: the tie goes to the smallest
    assert full["lp_weight_decay"] == 1e-3 and full["lp_fewshot_k"] == 0
    few = LinearProbe(fewshot_k=2, weight_decays=(1e-2,), max_iter=40).evaluate(bundle, test)
    assert few["lp_acc1"] > 0.9 and few["lp_fewshot_k"] == 2


def test_probe_and_finetune_on_synthetic_sets(synth_eval_sets: Path, tmp_path: Path) -> None:
    """Probes and fine-tuning end to end on CPU on the synthetic sets' train/test splits."""
    root = synth_eval_sets
    (tmp_path / "s.toml").write_text(
        '[[dataset]]\nname = "synth_shape"\nformat = "synth"\npath = "synth_shape"\n'
        'task = ["finetune", "linear_probe", "zeroshot_classification"]\n'
        '[dataset.options.linear_probe]\nfewshot_k = [0, 2]\nweight_decays = [1e-4, 1e-1]\nmax_iter = 20\n'
        '[dataset.options.finetune]\nepochs = 1\n')
    (tmp_path / "zs.toml").write_text('[[dataset]]\nname = "synth_shape"\nformat = "synth"\n'
                                      'path = "synth_shape"\ntask = "zeroshot_classification"\n')
    ckpt = save_tiny(tmp_path / "c.pt")
    records = evaluate_checkpoint(ckpt, suite=load_suite(tmp_path / "s.toml", root=root))
    by_task = {r["task"]: r for r in records}
    assert set(by_task) == {"linear_probe", "linear_probe_2shot", "finetune", "zeroshot_classification"}
    for r in records:
        assert r["n_samples"] == 200 and all(0 <= v <= 1 for k, v in r["metrics"].items() if "acc" in k)
    assert by_task["linear_probe"]["metrics"]["lp_weight_decay"] in (1e-4, 1e-1)
    assert set(by_task["finetune"]["metrics"]) == {"ft_acc1", "ft_mean_per_class_recall"}
    # fine-tuning ran first on a copy of the tower: later tasks saw the checkpoint's own weights
    (alone,) = evaluate_checkpoint(ckpt, suite=load_suite(tmp_path / "zs.toml", root=root))
    assert alone["metrics"] == by_task["zeroshot_classification"]["metrics"]


def test_probe_without_train_split_is_an_error(synth_eval_sets: Path, tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text('[[dataset]]\nname = "s"\nformat = "synth"\npath = "synth_shape"\n'
                                     'task = "linear_probe"\n')  # relative to the suite's folder
    shutil.copytree(synth_eval_sets / "synth_shape", tmp_path / "synth_shape",
                    ignore=shutil.ignore_patterns("train"))
    with pytest.raises(ClipscaleError, match=r"synth_shape/train/nshards\.txt: not found"):
        evaluate_checkpoint(save_tiny(tmp_path / "c.pt"), suite=tmp_path / "s.toml")
