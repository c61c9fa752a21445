"""Expressions in `clipscale fit` never run code: attack strings are refused before evaluation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipscale.cli import main
from clipscale.errors import ClipscaleError
from clipscale.fit import fit_table


def _attacks(target: Path) -> list[tuple[str, str]]:
    """(attack expression, the construct its one-line error must name)."""
    t = str(target)
    return [
        (f"@pd.io.common.os.system('touch {t}')", "`@` local variable reference"),
        (f"@df.to_csv('{t}')", "`@` local variable reference"),
        (f"@Path('{t}').touch()", "`@` local variable reference"),
        (f"__import__('os').system('touch {t}')", "attribute access"),
        (f"__import__('pathlib').Path('{t}').touch()", "attribute access"),
        ("().__class__.__bases__[0].__subclasses__()", "attribute access"),
        (f"open('{t}', 'w')", "calling 'open'"),
        (f"C + (lambda: __import__('os').system('touch {t}'))()", "a lambda"),
        (f"[__import__('os').system('touch {t}') for _ in C]", "a comprehension"),
        ("log(C, out=C)", "a keyword argument"),
        ("__builtins__", "dunder name '__builtins__'"),
        ("C[0]", "a subscript"),
    ]


def _table(tmp_path: Path) -> Path:
    c = np.geomspace(1e9, 1e12, 8)
    path = tmp_path / "t.csv"
    pd.DataFrame({"C": c, "acc": 1 - 2 * c**-0.1, "g": ["a"] * 8}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("option", ["--C", "--y", "--where", "--holdout"])
def test_cli_refuses_attacks_in_every_expression_option(tmp_path, capsys, option) -> None:
    table = _table(tmp_path)
    target = tmp_path / "F"
    base = {"--C": "C", "--y": "acc"}
    for attack, construct in _attacks(target):
        opts = {**base, option: attack}
        argv = ["fit", str(table), "--law", "power", "--error"] + [x for kv in opts.items() for x in kv]
        assert main(argv) == 2, attack
        err = capsys.readouterr().err
        assert not target.exists(), attack
        assert err.count("\n") == 1 and err.startswith("clipscale: error: "), err
        assert f"{option} " in err and f"{construct} is not allowed in expressions" in err, err


def test_python_m_cli_refuses_attack_with_one_line_exit_2(tmp_path) -> None:
    table, target = _table(tmp_path), tmp_path / "F"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for option, attack in [
        ("--C", f"@pd.io.common.os.system('touch {target}')"),
        ("--where", f"__import__('os').system('touch {target}') == 0"),
    ]:
        opts = {"--C": "C", "--y": "acc", option: attack}
        argv = [sys.executable, "-m", "clipscale.cli", "fit", str(table), "--law", "power", "--error"]
        proc = subprocess.run(argv + [x for kv in opts.items() for x in kv], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert not target.exists()
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "is not allowed in expressions" in proc.stderr


def test_library_refuses_attacks_before_evaluation(tmp_path) -> None:
    from clipscale.fit.expr import ExpressionError, parse

    df = pd.read_csv(_table(tmp_path))
    target = tmp_path / "F"
    for attack, construct in _attacks(target):
        for kwargs in ({"C": attack, "y": "acc"}, {"C": "C", "y": attack},
                       {"C": "C", "y": "acc", "where": attack}):
            with pytest.raises(ClipscaleError, match="is not allowed in expressions") as info:
                fit_table(df, law="power", error=True, **kwargs)
            assert construct in str(info.value) and "\n" not in str(info.value)
            assert not target.exists()
        with pytest.raises(ExpressionError, match="not allowed"):
            parse(attack)


def test_allowed_grammar_evaluates_like_pandas() -> None:
    from clipscale.fit.expr import ExpressionError, evaluate, parse

    df = pd.DataFrame({"a": [1.0, 2.0, 4.0], "my C": [4.0, 5.0, 6.0], "g": ["x", "y", "x"], "n": [1, 2, 3]})
    cases = {
        "`my C` / a": df["my C"] / df.a,
        "(g == 'x') * 3 + (g == 'y') * 7": (df.g == "x") * 3 + (df.g == "y") * 7,
        "a ** 2 // 3 % 2 - -a + +n": df.a**2 // 3 % 2 + df.a + df.n,
        "1 < a <= 2": (df.a > 1) & (df.a <= 2),
        "a > 1 and g != 'y' or n == 1": ((df.a > 1) & (df.g != "y")) | (df.n == 1),
        "not a > 2": ~(df.a > 2),
        "(a > 1) & ~(g == 'x') | (n == 3)": ((df.a > 1) & ~(df.g == "x")) | (df.n == 3),
        "g in ['x', 'z']": df.g.isin(["x", "z"]),
        "n not in (1, -2, 3)": ~df.n.isin([1, 3]),
        "log(a) + log10(a) + exp(a) + sqrt(a) + abs(-a)": np.log(df.a) + np.log10(df.a) + np.exp(df.a)
        + np.sqrt(df.a) + df.a,
        "where(a > 1, a, -1)": np.where(df.a > 1, df.a, -1),
        "min(a, `my C`, 2)": np.minimum(np.minimum(df.a, df["my C"]), 2),
        "a / max(a)": df.a / 4.0,
        "2 * 3.5e9": 7e9,
    }
    for expr, expected in cases.items():
        got = np.asarray(evaluate(expr, df), dtype=float)
        np.testing.assert_allclose(got, np.asarray(expected, dtype=float), err_msg=expr)
    for expr in ("a > 1 & g != 'y' | n == 1", "(a > 1) & ~(g == 'x')", "`my C` / a ** 2 - n % 2",
                 "g in ['x'] and not n > 2", "a <= 2 < `my C`"):  # what pandas gives (safe expressions)
        expected = df.eval(expr, engine="python").to_numpy()
        np.testing.assert_array_equal(np.asarray(evaluate(expr, df)), expected, err_msg=expr)
    assert evaluate("9 ** 9 ** 9", df) == np.inf  # floats: a huge power is inf, not a hang
    assert parse("`a b` + c + `a b`").names == {"a b", "c"}
    with pytest.raises(ExpressionError, match="unknown column 'zz'"):
        evaluate("a + zz", df)
    with pytest.raises(ExpressionError, match="arithmetic on a string"):
        parse("'x' * 10 ** 9")
    with pytest.raises(ExpressionError, match="arithmetic on text"):
        evaluate("g * 10 ** 9", df)  # would repeat each string a billion times
    with pytest.raises(ExpressionError, match="longer than 4000 characters"):
        parse("a + " * 1000 + "a")
    with pytest.raises(ExpressionError, match="not a valid expression"):
        parse("(" * 1900 + "a" + ")" * 1900)
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("-" * 1900 + "a")
    with pytest.raises(ExpressionError, match="unterminated `backtick`"):
        parse("`a + 1")
    assert np.asarray(evaluate("g == '@x`y'", df)).tolist() == [False] * 3  # @ and ` inside strings are text


def test_fit_where_and_holdout_use_the_safe_evaluator(tmp_path, capsys) -> None:
    table = _table(tmp_path)
    argv = ["fit", str(table), "--law", "power", "--C", "C", "--y", "acc", "--error"]
    assert main([*argv, "--where", "g in ['a'] and C > 1e9", "--holdout", "C >= 1e12", "--json"]) == 0
    assert '"holdout"' in capsys.readouterr().out
    assert main([*argv, "--where", "C * 2"]) == 2
    assert "--where 'C * 2': not a boolean expression" in capsys.readouterr().err


def test_unknown_column_names_the_close_match_and_counts_the_rest(tmp_path, capsys) -> None:
    """A typo in a wide table (the demo's is 26 columns) names the column meant, and the list says how
    many columns it leaves out, for every column option."""
    names = ["run_id", "model", "params", "params_nonemb", "gmacs", "data_size", "samples_seen", "compute",
             "distribution", "dataset_train", "seed", "dataset", "task", "checkpoint", "run_samples_seen",
             "final", "compute_group", "acc1", "acc5", "image_retrieval_recall@1", "text_retrieval_recall@1",
             "text_retrieval_recall@5", "image_retrieval_recall@5", "x1", "x2", "x3"]
    df = pd.DataFrame({n: [1.0, 2.0, 3.0] for n in names})
    df.to_csv(tmp_path / "t.csv", index=False)
    table = str(tmp_path / "t.csv")
    cases = [(["--y", "image_retrieval_recall5"], "did you mean 'image_retrieval_recall@5'"),
             (["--y", "acc1", "--C", "compte"], "did you mean 'compute'"),
             (["--y", "acc1", "--where", "datset == 'x'"], "did you mean 'dataset'"),
             (["--y", "acc1", "--by", "distrib"], "did you mean 'distribution'")]
    for extra, hint in cases:
        assert main(["fit", table, "--law", "power", "--C", "compute", *extra]) == 2
        err = capsys.readouterr().err
        assert hint in err and err.count("\n") == 1, err
        assert err.rstrip().endswith("… and 6 more"), err  # 20 of the 26 listed, the rest counted
    assert main(["fit", table, "--law", "power", "--C", "compute", "--y", "zzzz"]) == 2
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no guess
    from clipscale.fit.expr import ExpressionError, evaluate

    with pytest.raises(ExpressionError, match=r"unknown column 'acc' \(did you mean 'acc\d' or 'acc\d'\?\)"):
        evaluate("acc + 1", df)
