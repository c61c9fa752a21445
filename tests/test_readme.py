"""The README is a tested contract: every `clipscale` command in its fenced code blocks runs and exits 0.

Commands are read from README.md at test time, so a changed README is tested as it stands. They run
in-process (`clipscale.cli.main`) from a scratch directory holding a demo-shaped study:

- `clipscale-demo/` is the built-in demo study (`demo.toml`, its suite), run with the study test fakes
  (tests/study_fakes.py: every run, checkpoint and result row the demo has, at fake metrics), so
  `status`, `results`, `fit`, `predict`, `report`, `isoflop` ... see the demo's layout in seconds;
  `clipscale demo [--out DIR]` becomes `clipscale run DIR/demo.toml` (nothing left to train).
- `../shared/` is the repository's sibling `shared/` (the paper's published tables).
- A study file the README shows as a TOML block (the `[study]` table) is written under the name the
  commands give it (`laion.toml`); commands on it get `--output-dir` in the scratch directory, and
  `run --executor slurm` on it gets `--dry-run` (no cluster here). `run --executor slurm` on the demo
  study gets `--slurm-backend local`; `status --watch` is run once, without `--watch`.
- Lines that are not `clipscale` commands (`make`, `ls`, `xdg-open`) are skipped; so is every command
  of a block preceded by `<!-- readme-test: skip ... -->` (say why in the comment).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _shared_dir() -> Path | None:
    """The README's `../shared` (the repo root's sibling); for a git worktree, the main checkout's sibling;
    CLIPSCALE_SHARED overrides. None when it is not on this machine (those commands are skipped)."""
    import os

    candidates = [Path(os.environ["CLIPSCALE_SHARED"])] if os.environ.get("CLIPSCALE_SHARED") else []
    candidates.append(ROOT.parent / "shared")
    git = ROOT / ".git"
    if git.is_file():  # a worktree: "gitdir: MAIN/.git/worktrees/NAME"
        gitdir = Path(git.read_text(encoding="utf-8").split(":", 1)[1].strip())
        if gitdir.parent.name == "worktrees":
            candidates.append(gitdir.parent.parent.parent.parent / "shared")
    return next((c for c in candidates if c.is_dir()), None)


SHARED = _shared_dir()
SKIP_MARK = "<!-- readme-test: skip"
STUDY_VERBS = ("run", "status", "results", "report")
# Commands the README states that fail for a known, filed reason: strict xfail, so the entry must go
# once the fix lands. Key: the command's argv after `clipscale`, joined by spaces.
KNOWN_FAILURES: dict[str, str] = {}


def readme_commands(text: str) -> list[list[str]]:
    """argv (after `clipscale`) of every clipscale command in the README's fenced blocks, in order."""
    commands = []
    for m in re.finditer(r"^```([\w-]*)\n(.*?)^```", text, flags=re.S | re.M):
        lang, body = m.group(1), m.group(2)
        before = text[:m.start()].rstrip().splitlines()[-1:] or [""]
        if lang not in ("", "bash", "sh", "shell", "console") or before[0].startswith(SKIP_MARK):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line.removeprefix("$ "), comments=True)
            if words and (words[0] == "clipscale" or words[0].endswith("/clipscale")):
                commands.append(words[1:])
    return commands


def _readme_study(text: str) -> str | None:
    blocks = [b for b in re.findall(r"^```toml\n(.*?)^```", text, flags=re.S | re.M) if "[study]" in b]
    return blocks[0] if blocks else None


def adapt(argv: list[str], *, scratch: Path, readme_text: str) -> list[str]:
    """The README command as this test runs it (see the module docstring)."""
    if any("../shared" in a for a in argv):
        if SHARED is None:
            pytest.skip("../shared (the paper's published tables) is not on this machine")
        argv = [a.replace("../shared", str(SHARED)) for a in argv]
    if argv[:1] == ["status"] and "--watch" in argv:  # refreshes until every run ends: one look here
        i = argv.index("--watch")
        argv = argv[:i] + argv[i + 1 + (i + 1 < len(argv) and argv[i + 1].isdigit()):]
    if argv[:1] == ["demo"]:
        out = argv[argv.index("--out") + 1] if "--out" in argv else "clipscale-demo"
        argv = ["run", f"{out.rstrip('/')}/demo.toml"]
    if argv[0] in STUDY_VERBS and len(argv) > 1 and argv[1].endswith(".toml"):
        study, shown = scratch / argv[1], _readme_study(readme_text)
        if shown is not None and (not study.exists() or study.read_text(encoding="utf-8") == shown):
            study.parent.mkdir(parents=True, exist_ok=True)  # the README's own study file
            study.write_text(shown, encoding="utf-8")
            argv += ["--output-dir", str(scratch / "readme-study-out")]
            if argv[0] == "run" and "slurm" in argv and "--dry-run" not in argv:
                argv.append("--dry-run")
        elif argv[0] == "run" and "slurm" in argv and "--slurm-backend" not in argv:
            argv += ["--slurm-backend", "local"]
    return argv


@pytest.fixture(scope="module")
def demo_shaped_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clipscale.study.demo import install_demo
    from clipscale.study.pipeline import finish_study
    from clipscale.study.runner import run_study
    from clipscale.study.spec import load_study
    from tests.study_fakes import FAKE_HOOKS, fake_flops

    scratch = tmp_path_factory.mktemp("readme")
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        path = install_demo(scratch / "clipscale-demo")
        # the demo's grid and layout; fewer bootstrap refits than its 200, for the test's time
        path.write_text(path.read_text(encoding="utf-8").replace("bootstrap = 200", "bootstrap = 20"))
        study = load_study(path)
        run_study(study, hooks=FAKE_HOOKS, jobs=1, log=lambda s: None)
        assert finish_study(study, log=lambda s: None)["complete"]
    return scratch


def test_the_readme_has_commands_to_run():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    verbs = {c[0] for c in commands}
    assert {"status", "results", "fit", "predict", "reproduce", "run"} <= verbs, verbs


def test_readme_command_extraction_follows_the_rules():
    text = ("```bash\nmake demo\n.venv/bin/clipscale fit t.csv --law power \\\n    --y acc1  # note\n"
            "ls x/\n```\n<!-- readme-test: skip (needs your own runs) -->\n"
            "```bash\nclipscale eval logs/x\n```\n"
            "```toml\n[study]\n```\n```\n$ clipscale status s.toml\n```\n")
    assert readme_commands(text) == [["fit", "t.csv", "--law", "power", "--y", "acc1"], ["status", "s.toml"]]


@pytest.mark.parametrize("argv", readme_commands(README.read_text(encoding="utf-8")), ids=" ".join)
def test_readme_command_runs(argv: list[str], demo_shaped_study: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from clipscale.cli import main
    from clipscale.study.grid import default_flops
    from tests.study_fakes import fake_flops

    def flops(model: str) -> tuple[float, float]:  # the demo's runs were planned with the fakes' costs
        return fake_flops(model) if model.startswith("tiny-S") else default_flops(model)

    if " ".join(argv) in KNOWN_FAILURES:
        pytest.xfail(KNOWN_FAILURES[" ".join(argv)])
    monkeypatch.chdir(demo_shaped_study)
    run = adapt(argv, scratch=demo_shaped_study, readme_text=README.read_text(encoding="utf-8"))
    with mock.patch("clipscale.study.grid.default_flops", flops):
        code = main(run)
    err = capsys.readouterr().err
    assert code == 0, f"`clipscale {' '.join(run)}` exited {code}: {err[-2000:]}"


def test_readme_fit_reproduces_the_studys_law(demo_shaped_study: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Step 3's `clipscale fit` on the demo's results.csv gives the law the study itself fitted."""
    import json

    from clipscale.cli import main

    text = README.read_text(encoding="utf-8")
    fits = [c for c in readme_commands(text)
            if c[:2] == ["fit", "clipscale-demo/results.csv"] and "--save" in c]
    assert fits, "README step 3 has no `clipscale fit clipscale-demo/results.csv ... --save FILE`"
    argv = list(fits[0])
    study = json.loads((demo_shaped_study / "clipscale-demo" / "fits.json").read_text())
    demo_toml = (ROOT / "clipscale" / "study" / "demo.toml").read_text(encoding="utf-8")
    at = argv.index("--bootstrap") + 1
    assert f"bootstrap = {argv[at]}\n" in demo_toml, "README step 3's --bootstrap is not the demo's [fit] one"
    argv[at] = str(study["settings"]["bootstrap"])  # the test's study uses fewer refits, for time
    monkeypatch.chdir(demo_shaped_study)
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((demo_shaped_study / argv[argv.index("--save") + 1]).read_text())
    ours = {f["group"]: f for f in saved["fits"]}  # --by distribution: `uniform`, `zipf`
    target = ("synth_retrieval", argv[argv.index("--y") + 1], argv[argv.index("--law") + 1])
    same = [e for e in study["fits"] if (e["dataset"], e["metric"], e["law"]) == target]
    assert {e["distribution"] for e in same} == set(ours), "the README's fit and the study's differ in groups"
    for entry in same:  # group synth_retrieval/image_retrieval_recall@5/uniform/frontier against `uniform`
        mine = ours[entry["distribution"]]
        assert entry["group"].endswith(f"/{entry['distribution']}/{target[2]}")
        assert mine["n_points"] == entry["n_points"], entry["group"]
        for key, value in entry["params"].items():
            assert mine["params"][key] == pytest.approx(value, rel=1e-6), (entry["group"], key)
        for key, (lo, hi) in entry["ci"].items():  # the same resamples: the study's bootstrap count, seed
            assert mine["ci"][key] == pytest.approx([lo, hi], rel=1e-6), (entry["group"], key)
