"""docs/scaling-laws.md quotes what `clipscale` prints on the published tables in ../shared: the quoted
commands are read from the doc, run in-process, and every quoted number must be both in the doc and in
the output, so a change of the tool's output (or of the doc) fails here instead of leaving the doc stale.

Numbers from float32 estimators (the data-constrained law: the doc gives its machine spread) and
`clipscale reproduce` (40 s; its numbers are tested in test_fit_paper.py) are not checked here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.test_readme import ROOT, SHARED

DOC = ROOT / "docs" / "scaling-laws.md"
pytestmark = pytest.mark.skipif(SHARED is None, reason="../shared (the paper's tables) is not here")


def _flat(text: str) -> str:
    """Whitespace collapsed and typographic minus signs made ASCII (prose uses −, output -)."""
    return re.sub(r"\s+", " ", text).replace("−", "-")


def _doc() -> str:
    return _flat(DOC.read_text(encoding="utf-8"))


def _inline_command(start: str) -> list[str]:
    """argv (after `clipscale`) of the inline-code command in the doc that starts with `start`."""
    m = re.search(re.escape(start) + r"(.*?)`\)", _doc())
    assert m, f"docs/scaling-laws.md no longer quotes a command starting {start!r}"
    return [a.replace("../shared", str(SHARED)) for a in shlex.split(start + m.group(1))[1:]]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from clipscale.cli import main

    assert main(argv) == 0, argv
    return _flat(capsys.readouterr().out)


def _check(out: str, quoted: list[str]) -> None:
    doc = _doc()
    for snippet in map(_flat, quoted):
        assert snippet in doc, f"the doc no longer quotes {snippet!r}"
        assert snippet in out, f"the doc quotes {snippet!r}; the tool prints: {out}"


def test_isoflop_on_the_chinchilla_runs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = _inline_command("clipscale isoflop ../shared/external/chinchilla_svg_extracted.csv")
    _check(_run(argv, capsys), ["N* ∝ C^0.5366 [0.4616, 0.617]  D* ∝ C^0.4634 [0.383, 0.5384]  (8 of 21 "
                                "budgets;", "parabola window: 7 sizes nearest the best run)"])
    _check(_run([*argv, "--window", "all"], capsys), ["N* ∝ C^0.4832 [0.3356, 0.6413]"])


def test_power_law_differences_per_upstream_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(_inline_command("clipscale fit ../shared/paper/zeroshot_results.csv --law power --C "
                               "gmacs_total --y acc1 --error --where \"downstream_dataset == 'imagenet1k'\""),
               capsys)
    _check(out, ["alpha[LAION-2B] - alpha[LAION-400M] = -0.01752  95% CI [-0.03764, 0.0008055]: no clear "
                 "difference",
                 "alpha[LAION-2B] - alpha[LAION-80M] = -0.05554  95% CI [-0.07536, -0.04252]: differs",
                 "alpha[LAION-400M] - alpha[LAION-80M] = -0.03802  95% CI [-0.06518, -0.01523]: differs",
                 "no CI: fewer points than parameters + 2"])
    assert "alpha[CLIP-WIT]" not in out  # the doc says no difference is given for OpenAI's 3 runs


def test_frontier_table_power_row(capsys: pytest.CaptureFixture[str]) -> None:
    row = re.search(r"\| power alpha \|(.*?)\|\n", DOC.read_text(encoding="utf-8"))
    assert row, "the frontier table's power row is gone"
    quoted = [float(v.replace("−", "-")) for v in row.group(1).split("|")]
    base = _inline_command("clipscale fit ../shared/paper/zeroshot_results.csv --law LAW")
    for frontier, alpha in zip(("none", "cherti", "pareto", "hull"), quoted, strict=True):
        argv = [a.replace("LAW", "power").replace("F", frontier) if a in ("LAW", "F") else a for a in base]
        out = _run(argv, capsys)
        got = float(re.search(r"alpha = (-?[\d.]+)", out).group(1))
        assert round(got, 3) == alpha, (frontier, got, alpha)


def test_joint_fit_and_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(U=.*?)```", text, flags=re.S).group(1)
    u = shlex.split(block.splitlines()[0].split("=", 1)[1])[0]
    monkeypatch.chdir(tmp_path)
    outs = []
    for line in block.replace("\\\n", " ").splitlines()[1:]:
        argv = shlex.split(line.replace('"$U"', shlex.quote(u)))
        assert Path(argv[0]).name == "clipscale", line
        outs.append(_run([a.replace("../shared", str(SHARED)) for a in argv[1:]], capsys))
    fit, at, budget = outs
    assert "N_opt_exponent = 0.842203 [0.715157, 0.963482]" in fit  # the doc: 0.84, CI [0.72, 0.96]
    assert "N_opt ∝ C^0.84, 95 % CI [0.72, 0.96]" in _doc()
    _check(at, ["predicted error 0.1845  95% CI [0.1792, 0.1895]", "N: extrapolates 1.83x",
                "S: extrapolates 1.96x"])
    _check(budget, ["allocation: budget=1e+13, N=16916.2, D=5.91149e+08, predicted_error=0.182474"])
