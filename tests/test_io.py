"""Atomic writes, strict JSON and torn-line tolerant JSON lines: the guarantees results rely on."""

import json
import os

import pytest

from clipscale.io import append_jsonl, atomic_write_json, atomic_write_text, dumps, read_jsonl


def test_strict_json_turns_non_finite_into_null():
    text = dumps({"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": {"d": None}}
    assert "NaN" not in text and "Infinity" not in text


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "results.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by others, like open()


def test_failed_atomic_write_leaves_old_content_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "r.txt"
    target.write_text("old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_read_jsonl_skips_torn_last_line_but_not_corruption_in_the_middle(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # a crash mid-append
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    path.write_text('{"step": 1}\n{broken\n{"step": 3}\n')
    with pytest.raises(json.JSONDecodeError):
        list(read_jsonl(path))


def test_read_toml_errors_name_the_file_on_one_line(tmp_path):
    from clipscale.errors import ClipscaleError
    from clipscale.io import read_toml

    good = tmp_path / "s.toml"
    good.write_text('name = "x"\n[train]\nlr = 1e-3\n')
    assert read_toml(good, what="study file") == {"name": "x", "train": {"lr": 1e-3}}
    with pytest.raises(ClipscaleError, match=r"missing\.toml: study file not found$"):
        read_toml(tmp_path / "missing.toml", what="study file")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ClipscaleError, match=r"bad\.toml: invalid TOML \(") as info:
        read_toml(bad, what="train config file")
    assert "\n" not in str(info.value)
