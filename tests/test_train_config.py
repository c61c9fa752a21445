"""TrainConfig validation, TOML + CLI overrides, the LR schedule and the weight-decay split."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from clipscale.errors import ClipscaleError
from clipscale.train import TrainConfig, load_train_config
from clipscale.train.config import parse_override
from clipscale.train.optim import learning_rate, param_groups

BASE = {"train_data": "shards/{00000..00001}.tar", "output_dir": "runs/x"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 12.5),
        ("samples_seen", -1),
        ("lr", -1e-3),
        ("schedule", "linear"),
        ("precision", "fp8"),
        ("device", "tpu"),
        ("checkpoint_points", [0.0, 0.5]),
        ("checkpoint_points", [1.5]),
        ("data_size", 0),
        ("warmup", 10**9),
        ("cooldown", 0.0),
        ("workers", -2),
        ("train_data", ""),
        ("train_data", [{"shards": "a.tar", "weight": -1}]),
        ("grad_checkpointing", "yes"),
    ],
)
def test_invalid_fields_give_one_line_errors_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ClipscaleError) as info:
        TrainConfig(**{**BASE, field: value})
    message = str(info.value)
    assert field in message and "\n" not in message


def test_defaults_follow_the_openclip_recipe() -> None:
    cfg = TrainConfig(**BASE, samples_seen=1000)
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (0.9, 0.98, 1e-6, 0.2)
    assert cfg.warmup == 100  # 10 % of samples seen
    assert cfg.checkpoint_points == pytest.approx([0.1 * i for i in range(1, 11)])
    assert cfg.total_steps == math.ceil(1000 / 128)


def test_toml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('model = "tiny-S1"\ntrain_data = "x/{0..3}.tar"\nsamples_seen = 5000\nlr = 1e-3\n'
                    'checkpoint_points = [0.5, 1.0]\n')
    cfg = load_train_config(path, {"lr": "2e-3", "data_size": "1e3", "compile": "true", "resume": "none",
                                   "checkpoint_points": "0.25,1", "grad_clip": "none", "output-dir": "o"})
    assert (cfg.model, cfg.samples_seen, cfg.lr, cfg.data_size) == ("tiny-S1", 5000, 2e-3, 1000)
    assert cfg.compile is True and cfg.resume == "none" and cfg.grad_clip is None and cfg.output_dir == "o"
    assert cfg.checkpoint_points == [0.25, 1.0]
    weighted = load_train_config(None, {"train_data": [{"shards": "a/{0..1}.tar", "weight": 2},
                                                       {"shards": "b.tar"}]})
    assert weighted.train_data == [{"shards": "a/{0..1}.tar", "weight": 2.0},
                                   {"shards": "b.tar", "weight": 1.0}]


def test_unknown_keys_and_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("modle = 'tiny-S0'\n")
    with pytest.raises(ClipscaleError, match=r"unknown train config key.*modle"):
        load_train_config(bad)
    with pytest.raises(ClipscaleError, match="not found"):
        load_train_config(tmp_path / "missing.toml")
    with pytest.raises(ClipscaleError, match="unknown train option"):
        parse_override("learning_rate", "1")
    with pytest.raises(ClipscaleError, match="'batch_size'"):
        parse_override("batch_size", "many")


def test_cli_parses_every_key_as_an_override() -> None:
    from clipscale.cli import build_parser
    from clipscale.train.cli import overrides_from_args

    args = build_parser().parse_args(["train", "cfg.toml", "--lr", "1e-3", "--batch_size", "64",
                                      "--tensorboard", "--resume", "auto", "--train-data", "d/{0..1}.tar"])
    assert args.config == "cfg.toml"
    assert overrides_from_args(args) == {"lr": "1e-3", "batch_size": "64", "tensorboard": "true",
                                         "resume": "auto", "train_data": "d/{0..1}.tar"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--batch-size"], "--batch-size needs a value (an integer)"),
    (["--model", "--output-dir", "o"], "--model needs a value (a string)"),
    (["--lr", "--progress"], "--lr needs a value (a number or none)"),
    (["--data_mode"], "--data-mode needs a value (one of index, stream)"),
    (["--checkpoint-points"], "--checkpoint-points needs a value (a comma-separated list of numbers)"),
])
def test_a_bare_value_flag_is_one_line_error_not_true(argv: list[str], message: str, capsys) -> None:
    """Tour 3 #21: `train --batch-size` alone read as 'true' ("cannot parse 'true' as int"), `--model`
    alone trained model 'true'; bare flags mean true for switches only."""
    from clipscale.cli import build_parser, main
    from clipscale.train.cli import overrides_from_args

    assert main(["train", *argv]) == 2
    assert capsys.readouterr().err == f"clipscale: error: {message}\n"
    switches = build_parser().parse_args(["train", "--progress", "--keep-latest", "--compile", "false"])
    assert overrides_from_args(switches) == {"progress": "true", "keep_latest": "true", "compile": "false"}


def test_cosine_schedule_warms_up_then_reaches_zero() -> None:
    kw = {"base_lr": 1.0, "warmup": 100, "total": 1100, "schedule": "cosine", "cooldown": 0.2}
    assert learning_rate(50, **kw) == pytest.approx(0.5)
    assert learning_rate(100, **kw) == pytest.approx(1.0)
    assert learning_rate(600, **kw) == pytest.approx(0.5)  # half-way through the cosine
    assert learning_rate(1100, **kw) == pytest.approx(0.0, abs=1e-12)
    values = [learning_rate(s, **kw) for s in range(100, 1101, 50)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_const_cooldown_schedule() -> None:
    kw = {"base_lr": 2.0, "warmup": 100, "total": 1000, "schedule": "const-cooldown", "cooldown": 0.2}
    assert learning_rate(100, **kw) == 2.0 and learning_rate(800, **kw) == 2.0
    assert learning_rate(900, **kw) == pytest.approx(1.0)
    assert learning_rate(1000, **kw) == 0.0


def test_weight_decay_only_on_weight_matrices() -> None:
    from clipscale.models import create_model

    model = create_model("tiny-S0")
    groups = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    no_wd = {names[id(p)] for p in groups[0]["params"]}
    wd = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.2
    assert "logit_scale" in no_wd and "visual.class_embedding" in no_wd
    assert all("ln" in n or "bias" in n or "logit_scale" in n or "embedding" in n for n in no_wd)
    assert not any("bias" in n or ".ln_" in n for n in wd)
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in wd
    assert len(no_wd) + len(wd) == len(names)


def test_resume_allow_list_is_operational_and_recipe_changes_name_the_rest() -> None:
    from clipscale.train.config import FIELD_NAMES, RESUME_OPERATIONAL_KEYS, recipe_changes

    assert set(RESUME_OPERATIONAL_KEYS) <= set(FIELD_NAMES)
    recipe = {"lr", "warmup", "schedule", "cooldown", "weight_decay", "beta1", "beta2", "eps", "grad_clip",
              "batch_size", "model", "train_data", "data_size", "samples_seen", "seed", "precision",
              "local_loss", "strategy", "compile", "data_mode", "shuffle_buffer", "checkpoint_points"}
    assert not recipe & set(RESUME_OPERATIONAL_KEYS)
    saved = TrainConfig(**BASE, lr=1e-3).to_dict()
    now = TrainConfig(**{**BASE, "output_dir": "runs/y"}, lr=2e-3, warmup=5, workers=4, threads=2,
                      log_every=3, progress=False, eval_suite="synth").to_dict()
    assert recipe_changes(saved, now) == ["lr", "warmup"]
    del saved["warmup"]  # a checkpoint that predates a key does not block the resume on it
    assert recipe_changes(saved, now) == ["lr"]
