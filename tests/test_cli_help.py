"""Help that explains: every flag of every verb says what it means; docs/config.md matches the code."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clipscale.cli import build_parser, main, walk_parsers
from clipscale.confighelp import config_markdown

ROOT = Path(__file__).resolve().parents[1]


def _options() -> list[tuple[str, argparse.Action]]:
    out = []
    for parser in walk_parsers(build_parser()):
        for action in parser._actions:
            skip = argparse._HelpAction | argparse._VersionAction
            if action.option_strings and not isinstance(action, skip):
                out.append((parser.prog, action))
    return out


def test_every_flag_of_every_verb_has_help():
    missing = [f"{prog} {action.option_strings[0]}" for prog, action in _options()
               if action.help != argparse.SUPPRESS and not (action.help or "").strip()]
    assert len(_options()) > 100  # the walk reached the verbs
    assert not missing, f"flags without help: {missing}"


def test_every_positional_has_help():
    missing = []
    for parser in walk_parsers(build_parser()):
        for action in parser._actions:
            positional = not action.option_strings and not isinstance(action, argparse._SubParsersAction)
            if positional and not (action.help or "").strip():
                missing.append(f"{parser.prog} {action.dest}")
    assert not missing, f"arguments without help: {missing}"


def test_train_help_gives_meaning_default_and_values(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    expected = (("--schedule", "one of: cosine, const-cooldown"), ("--precision", "one of: fp32, bf16"),
                ("--strategy", "one of: ddp, fsdp"), ("--data-mode", "one of: index, stream"),
                ("--resume", 'none: start the same config over in output_dir; or a checkpoint path '
                             '(default: "auto")'),
                ("--report-to", "one of: tensorboard, wandb"))
    for flag, piece in expected:
        assert flag in text and piece in text, (flag, piece)


def test_model_config_is_one_repeatable_flag_on_every_verb_that_registers_configs():
    from clipscale.train.cli import overrides_from_args

    parser = build_parser()
    for verb in ("train", "eval", "import", "models", "flops"):
        sub = next(p for p in walk_parsers(parser) if p.prog == f"clipscale {verb}")
        flags = {s for a in sub._actions for s in a.option_strings if a.help != argparse.SUPPRESS}
        assert "--model-config" in flags and "--model-configs" not in flags, verb
    args = parser.parse_args(["train", "--model-config", "a.json", "--model-config", "b.json"])
    assert overrides_from_args(args)["model_configs"] == ["a.json", "b.json"]
    old = parser.parse_args(["train", "--model-configs", "a.json,b.json"])  # the old spelling still works
    assert overrides_from_args(old)["model_configs"] == ["a.json", "b.json"]


def test_validation_error_uses_the_field_doc():
    from clipscale.errors import ClipscaleError
    from clipscale.train.config import TrainConfig

    expected = r"'schedule': expected one of cosine, const-cooldown, got 'linear' \(lea"
    with pytest.raises(ClipscaleError, match=expected):
        TrainConfig(train_data="x.tar", schedule="linear")


def test_docs_config_md_is_generated_from_the_field_docs():
    assert (ROOT / "docs" / "config.md").read_text(encoding="utf-8") == config_markdown(), (
        "docs/config.md is stale: run `python -m clipscale.confighelp docs/config.md`")
    from clipscale.train.config import FIELD_NAMES

    text = config_markdown()
    assert all(f"| `{name}` |" in text for name in FIELD_NAMES)


def test_every_config_field_has_its_own_meaning():
    """help_line adds the default, so a field without help would still look documented in --help."""
    import dataclasses

    from clipscale.confighelp import _sections, field_help

    missing = [f"{cls.__name__}.{f.name}" for _, _, cls in _sections() for f in dataclasses.fields(cls)
               if not field_help(f).strip()]
    assert not missing, f"config fields without help: {missing} (use confighelp.doc_field)"


def _rendered() -> list[tuple[str, argparse.Action, str]]:
    """(verb, option, its help as --help prints it, on one line)."""
    out = []
    for parser in walk_parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            skip = argparse._HelpAction | argparse._VersionAction
            if action.option_strings and not isinstance(action, skip) and action.help != argparse.SUPPRESS:
                out.append((parser.prog, action, " ".join(formatter._expand_help(action).split())))
    return out


def test_every_option_states_its_default_and_choices_in_one_wording():
    """A default argparse knows (0 included: 0 == False in Python) is shown as "default: X", a switch's as
    "default: off"; choices as "one of: ..."; no other spelling of a default ("(default 10)", "(default)")."""
    import re

    from clipscale.cli import default_text

    wrong = []
    for prog, action, text in _rendered():
        flag = f"{prog} {action.option_strings[-1]}: {text}"
        shown = default_text(action)
        if shown is not None and "default: " not in text:
            wrong.append(f"no 'default: X': {flag}")
        if re.search(r"[(;,] ?default(?!:)", text):
            wrong.append(f"another wording of the default: {flag}")
        if action.choices and not ("one of: " in text and all(str(c) in text for c in action.choices)):
            wrong.append(f"choices not listed: {flag}")
    assert not wrong, "\n".join(wrong)
    texts = {(prog, a.option_strings[-1]): t for prog, a, t in _rendered()}
    assert "(default: 0)" in texts[("clipscale fit", "--bootstrap")]
    assert "(default: 0)" in texts[("clipscale isoflop", "--seed")]
    assert texts[("clipscale fit", "--error")].endswith("(default: off)")


def test_every_json_flag_has_one_wording():
    from clipscale.jsonout import JSON_HELP

    flags = [(prog, text) for prog, a, text in _rendered() if a.option_strings == ["--json"]]
    assert len(flags) >= 15  # every verb
    assert all(text == JSON_HELP for _, text in flags), [f for f in flags if f[1] != JSON_HELP]


def test_plot_takes_one_form_in_fit_and_isoflop():
    parser = build_parser()
    for verb, name in (("fit", "fit.png"), ("isoflop", "isoflop.png")):
        args = parser.parse_args([verb, "t.csv", "--C", "c", "--N", "n", "--y", "y", "--plot"])
        assert args.plot == name
        args = parser.parse_args([verb, "t.csv", "--C", "c", "--N", "n", "--y", "y", "--plot", "f.svg"])
        assert args.plot == "f.svg"


def test_eval_device_defaults_as_train_does(monkeypatch):
    """auto: cuda if available, else cpu, as `train --device` and a study's evaluations."""
    import torch

    from clipscale.evals.cli import _device
    from clipscale.train.config import TrainConfig

    parser = build_parser()
    eval_default = parser.parse_args(["eval", "x", "--suite", "s"]).device
    assert eval_default == TrainConfig(train_data="x").device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _device("auto") == "cpu" and _device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _device("auto") == "cuda"


@pytest.mark.parametrize(("argv", "verb", "hint"), [
    (["train", "--modle", "tiny-S0"], "clipscale train", "(did you mean --model?)"),
    (["import", "tr1", "--samples-seen", "5", "--out", "x/"], "clipscale import", None),
    (["data", "synth", "--out", "x", "--samples", "3", "--sed", "1"], "clipscale data synth",
     "(did you mean --seed?)"),
    (["fit", "t.csv", "--y", "a", "--bootstrp=3"], "clipscale fit", "(did you mean --bootstrap?)"),
])
def test_an_unknown_flag_shows_the_verbs_usage(argv, verb, hint, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(f"usage: {verb} "), err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{verb}: error: unrecognized arguments: "), last
    assert (hint in last) if hint else "did you mean" not in last


def test_warnings_are_one_warning_line_even_after_a_library_logs_info() -> None:
    """open_clip's `logging.info` would install Python's default `WARNING:clipscale.study.grid:` format
    mid-run; the CLI's logging gives `warning: ...` lines throughout (a fresh interpreter: pytest has
    its own handlers on the root logger)."""
    import subprocess
    import sys

    code = ("import logging; from clipscale.cli import configure_logging; configure_logging(); "
            "logging.info('a library'); logging.getLogger('clipscale.study.grid').warning('rounded up')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stderr == "warning: rounded up\n"
