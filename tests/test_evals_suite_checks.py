"""Suites are checked before any training: templates (only `{c}`), UTF-8 class names, aggregates."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipscale.cli import main
from clipscale.errors import ClipscaleError
from clipscale.evals.suite import check_suite, load_suite
from tests.test_evals_data import cls_samples, make_wds

BAD_TEMPLATES = ["a photo of a {}.", "a {0}", "{c.__class__}", "a {c!r}", "a {other} of {c}", "a {c",
                 "a photo", "a c}"]


def _suite(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "suite.toml"
    path.write_text('[[dataset]]\nname = "d"\nformat = "wds"\npath = "d"\ntask = "zeroshot_classification"\n'
                    + body)
    return path


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_a_bad_template_is_one_line_at_suite_check(tmp_path: Path, template: str) -> None:
    make_wds(tmp_path / "d", cls_samples([0, 1]), classnames=["a", "b"], templates=["x {c}", template])
    with pytest.raises(ClipscaleError) as err:
        check_suite(_suite(tmp_path), root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "zeroshot_classification_templates.txt" in msg and "line 2" in msg


def test_good_templates_pass_and_literal_braces_are_allowed(tmp_path: Path) -> None:
    make_wds(tmp_path / "d", cls_samples([0, 1]), classnames=["a", "b"],
             templates=["a photo of a {c}.", "{{literal}} {c} and {c}"])
    assert check_suite(_suite(tmp_path), root=tmp_path).jobs[0].dataset.name == "d"


def test_the_suites_own_templates_file_is_checked_even_without_data(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("a {} photo\n")
    suite = tmp_path / "s.toml"
    suite.write_text('[[dataset]]\nname = "d"\nformat = "wds"\npath = "d"\n'
                     f'task = "zeroshot_classification"\ntemplates = "{tmp_path / "t.txt"}"\n')
    with pytest.raises(ClipscaleError, match=r"t\.txt: template on line 1"):
        check_suite(suite, root=None)


def test_non_utf8_classnames_and_suite_are_one_line(tmp_path: Path) -> None:
    make_wds(tmp_path / "d", cls_samples([0, 1]), templates=["{c}"])
    (tmp_path / "d" / "classnames.txt").write_bytes(b"caf\xe9\nb\n")
    with pytest.raises(ClipscaleError, match=r"classnames\.txt: class names file is not UTF-8"):
        check_suite(_suite(tmp_path), root=tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ClipscaleError, match="not UTF-8"):
        load_suite(bad)


def test_train_with_a_bad_suite_fails_before_training(tmp_path: Path, capsys) -> None:
    make_wds(tmp_path / "d", cls_samples([0, 1]), classnames=["a", "b"], templates=["a photo of a {}."])
    out = tmp_path / "run"
    code = main(["train", "--model", "tiny-S0", "--train-data", str(tmp_path / "none.tar"), "--samples-seen",
                 "64", "--output-dir", str(out), "--eval-suite", str(_suite(tmp_path)),
                 "--eval-data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "eval_suite" in err and "template on line 1" in err and len(err.splitlines()) == 1
    assert not (out / "checkpoints").exists()


AGG_SUITE = """
[[dataset]]
name = "a"
format = "wds"
path = "a"
task = "zeroshot_retrieval"
[[dataset]]
name = "b"
format = "wds"
path = "b"
task = ["zeroshot_retrieval", "zeroshot_classification"]
"""


def test_aggregates_parse_in_both_forms(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(AGG_SUITE + '[[aggregate]]\nname = "avg"\nmetric = "image_retrieval_recall@5"\n'
                    'of = ["a", {dataset = "b", metric = "acc1"}]\n')
    (agg,) = load_suite(path).aggregates
    assert agg.name == "avg" and agg.parts == (("a", "image_retrieval_recall@5"), ("b", "acc1"))


@pytest.mark.parametrize(("entry", "words"), [
    ('name = "avg"\nmetric = "acc1"\nof = ["a", "c"]', "dataset 'c' is not a [[dataset]]"),
    ('name = "a"\nmetric = "acc1"\nof = ["a", "b"]', "already a dataset or aggregate"),
    ('name = "avg"\nmetric = "acc1"\nof = []', "non-empty list"),
    ('name = "avg"\nof = ["a"]', "'metric' must be"),
    ('name = "avg"\nmetric = "acc1"\nof = ["a", "a"]', "twice"),
    ('name = "avg"\nmetric = "acc1"\nof = ["a"]\nweights = [1]', "unknown key"),
])
def test_bad_aggregates_are_one_line_naming_file_and_entry(tmp_path: Path, entry: str, words: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(AGG_SUITE + "[[aggregate]]\n" + entry + "\n")
    with pytest.raises(ClipscaleError) as err:
        load_suite(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: aggregate[0]") and words in msg


def test_a_duplicate_aggregate_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    one = '[[aggregate]]\nname = "avg"\nmetric = "acc1"\nof = ["a", "b"]\n'
    path.write_text(AGG_SUITE + one + one)
    with pytest.raises(ClipscaleError, match=r"aggregate\[1\] \('avg'\): name 'avg' is already"):
        load_suite(path)
