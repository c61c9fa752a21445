"""FLOPs/parameter accounting against the paper's arch_info.csv, the ladder's span, and the CLI verbs."""

from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clipscale.cli import main
from clipscale.errors import ClipscaleError
from clipscale.models import LADDER
from clipscale.models.flops import _counter, count_flops, run_compute, train_flops
from clipscale.models.registry import list_models

PAPER = Path(__file__).parents[1].parent / "shared" / "paper"
NEEDS_PAPER = pytest.mark.skipif(not (PAPER / "arch_info.csv").is_file(),
                                 reason=f"paper tables not found at {PAPER} (../shared absent)")
TOWER_KEYS = ("gmacs", "image_gmacs", "text_gmacs", "mparams", "image_mparams", "text_mparams")
OPEN_CLIP_NAME = {"ViT-G-14": "ViT-bigG-14"}  # the paper's ViT-G/14 is open_clip's ViT-bigG-14


def _rows(filename: str) -> list[dict[str, str]]:
    path = PAPER / filename
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _resolve(paper_name: str) -> tuple[str, int | None]:
    """open_clip name (+ image size override) of a paper architecture.

    open_clip has no config for the paper's 336 px ViT-H/g/G/e: they are the 224 px model at 336 px.
    """
    known = set(list_models())
    if paper_name not in known and paper_name.endswith("-336"):
        base = paper_name.removesuffix("-336")
        return OPEN_CLIP_NAME.get(base, base), 336
    return OPEN_CLIP_NAME.get(paper_name, paper_name), None


@NEEDS_PAPER
@pytest.mark.parametrize("row", _rows("arch_info.csv"), ids=lambda r: r["model"])
def test_matches_paper_arch_info(row: dict[str, str]) -> None:
    name, size = _resolve(row["model"])
    report = count_flops(name, image_size=size).to_dict()
    assert report["image_size"] == int(row["image_size"])
    assert report["context_length"] == 77
    for key in TOWER_KEYS:
        paper = float(row[key])
        assert report[key] == pytest.approx(paper, rel=0.01), f"{row['model']} {key}: {report[key]}"


@NEEDS_PAPER
def test_run_compute_matches_paper_gmacs_total() -> None:
    runs = {(r["arch"], float(r["samples_seen"]), float(r["gmacs_total"]))
            for r in _rows("zeroshot_results.csv")}
    assert len(runs) >= 10
    for arch, samples_seen, gmacs_total in runs:
        assert run_compute(arch, samples_seen) == pytest.approx(gmacs_total, rel=0.01), arch


def test_compute_units() -> None:
    assert run_compute(2.5, 1000) == 2500.0
    assert run_compute("tiny-S0", 10) == pytest.approx(10 * count_flops("tiny-S0").gmacs)
    assert train_flops(run_compute(2.5, 1000)) == pytest.approx(6 * 2500e9)
    with pytest.raises(ClipscaleError, match="samples_seen"):
        run_compute(2.5, -1)
    with pytest.raises(ClipscaleError, match="gmacs"):
        run_compute(0.0, 10)


@pytest.mark.parametrize("name", [*LADDER, "ViT-B-32", "RN50"])
def test_towers_sum_to_total(name: str) -> None:
    r = count_flops(name)
    assert r.gmacs == pytest.approx(r.image_gmacs + r.text_gmacs, rel=1e-12)
    assert r.mparams == pytest.approx(r.image_mparams + r.text_mparams, rel=1e-12)
    assert min(r.image_gmacs, r.text_gmacs, r.image_mparams, r.text_mparams) > 0


def test_ladder_gmacs_increase_and_span_30x() -> None:
    names = [n for n in LADDER if not n.endswith("-bpe")]
    assert names == [f"tiny-S{i}" for i in range(len(names))] and len(names) >= 5
    assert [n for n in LADDER if n.endswith("-bpe")] == [f"{n}-bpe" for n in names]
    gmacs = [count_flops(n).gmacs for n in names]
    params = [count_flops(n).mparams for n in names]
    assert all(a < b for a, b in itertools.pairwise(gmacs)), gmacs
    assert all(a < b for a, b in itertools.pairwise(params)), params
    assert gmacs[-1] / gmacs[0] >= 30
    assert {count_flops(n).context_length for n in names} == {32}


def test_params_nonemb_leaves_out_token_and_positional_embeddings() -> None:
    """ViT-B-32: 151.28 M in all; token (49408 x 512), text positions (77 x 512), image positions
    (50 x 768) and the class token (768) are embeddings. A BPE twin differs from its word twin only in
    the token table, so both have the same params_nonemb while the table is > 95 % of the BPE total."""
    r = count_flops("ViT-B-32")
    embeddings = 49408 * 512 + 77 * 512 + 50 * 768 + 768
    assert r.mparams_nonemb == pytest.approx(r.mparams - embeddings / 1e6, abs=1e-9)
    for name in ("tiny-S0", "tiny-S2"):
        word, bpe = count_flops(name), count_flops(f"{name}-bpe")
        assert bpe.mparams_nonemb == pytest.approx(word.mparams_nonemb, abs=1e-9)
        assert word.mparams_nonemb < word.mparams
        assert bpe.gmacs == pytest.approx(word.gmacs)
    assert 1 - count_flops("tiny-S0-bpe").mparams_nonemb / count_flops("tiny-S0-bpe").mparams > 0.95


def test_cpu_flash_attention_is_counted() -> None:
    """On real CPU tensors SDPA runs a fused kernel torch's counter has no formula for; ours counts it."""
    b, h, s, d = 2, 3, 10, 8
    q = torch.randn(b, h, s, d)
    with _counter() as counter:
        F.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * (2 * b * h * s * s * d)  # QK^T and AV, 2 FLOPs per MAC


def test_flops_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "tiny-S2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(TOWER_KEYS) | {"model"} <= set(out)
    expected = count_flops("tiny-S2").to_dict()
    for key in (*TOWER_KEYS, "image_size", "context_length"):
        assert out[key] == pytest.approx(expected[key])
    assert out["model"] == "tiny-S2"


def test_flops_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "ViT-B-32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    total = next(line.split() for line in lines if line.startswith("total"))
    assert total == ["total", "151.28", "7.39"]


def test_flops_cli_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "ViT-Q-99"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "ViT-Q-99" in err and "did you mean" in err and "ViT-B-32" in err  # the closest names first
    assert "`clipscale models` lists all" in err  # not all of them, inline
    assert main(["flops", "tiny-S0", "--image-size", "0"]) == 2


def test_models_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == list_models()
    ladder = [r for r in rows if r["ladder"]]
    assert [r["model"] for r in ladder] == list(LADDER) == [r["model"] for r in rows[: len(LADDER)]]
    for r in ladder:
        assert math.isclose(r["gmacs"], count_flops(r["model"]).gmacs)
        assert math.isclose(r["mparams_nonemb"], count_flops(r["model"]).mparams_nonemb)
    assert all(r["gmacs"] is None for r in rows if not r["ladder"])


def test_help_does_not_import_torch() -> None:
    """`clipscale --help` must stay fast: building the parser imports no heavy library."""
    heavy = ("torch", "open_clip", "numpy", "scipy", "pandas", "matplotlib")
    code = ("import sys, clipscale.cli; clipscale.cli.build_parser(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_coca_counts_its_text_decoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CoCa's multimodal decoder runs on every training sample (captioning loss): gmacs = image + text
    towers + decoder, the decoder's share checked against a hand count of its matmuls."""
    from clipscale.models.registry import register_model_config

    d, layers, ctx, vocab, queries = 32, 2, 16, 500, 5
    cfg = {"embed_dim": d, "custom_text": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": d, "patch_size": 8, "head_width": 16,
                          "attentional_pool": True, "attn_pooler_queries": queries, "attn_pooler_heads": 1,
                          "output_tokens": True},
           "text_cfg": {"context_length": ctx, "vocab_size": vocab, "width": d, "heads": 2, "layers": 1,
                        "embed_cls": True, "output_tokens": True},
           "multimodal_cfg": {"context_length": ctx, "vocab_size": vocab, "width": d, "heads": 2,
                              "layers": layers}}
    (tmp_path / "test-flops-coca.json").write_text(json.dumps(cfg))
    register_model_config(tmp_path / "test-flops-coca.json")
    r = count_flops("test-flops-coca")
    # teacher forcing: the decoder sees the caption's tokens but the last; the image's pooled tokens
    # but the first (the contrastive one); MACs of every matmul (mlp ratio 4)
    t, m = ctx - 1, queries - 1
    self_block = 4 * t * d * d + 2 * t * t * d + 8 * t * d * d
    cross_block = 2 * t * d * d + 2 * m * d * d + 2 * t * m * d + 8 * t * d * d
    hand = (layers * (self_block + cross_block) + t * d * vocab) / 1e9
    assert r.decoder_gmacs == pytest.approx(hand, rel=1e-9)
    assert r.gmacs == pytest.approx(r.image_gmacs + r.text_gmacs + hand, rel=1e-9)
    assert r.decoder_gmacs > 0.5 * r.gmacs  # a large undercount before
    assert r.mparams == pytest.approx(r.image_mparams + r.text_mparams + r.decoder_mparams, rel=1e-12)
    assert main(["flops", "coca_ViT-B-32", "--json"]) == 0
    coca = json.loads(capsys.readouterr().out)
    assert coca["gmacs"] == pytest.approx(coca["image_gmacs"] + coca["text_gmacs"] + coca["decoder_gmacs"])
    assert coca["decoder_gmacs"] > coca["text_gmacs"]
