"""Atomic writes, strict JSON and torn-line tolerant JSON lines: the guarantees results rely on."""

import errno
import json
import logging
import os
import stat

import pytest

from clipscale.errors import ClipscaleError
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
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ClipscaleError, match=f"^no space left on {tmp_path} \\(writing r.txt\\)$"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_read_jsonl_skips_and_counts_torn_lines_with_a_warning(tmp_path, caplog):
    """Issue 10 case 4: a torn final line is skipped and counted in one warning, never a crash."""
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # a crash mid-append
    with caplog.at_level(logging.WARNING, logger="clipscale.io"):
        assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    (warning,) = caplog.records
    assert "m.jsonl: skipped 1 torn line(s) (line 3)" in warning.getMessage()
    caplog.clear()
    path.write_text('{"step": 1}\n{broken\n{"step": 3}\n')  # a torn line in the middle is skipped too
    with caplog.at_level(logging.WARNING, logger="clipscale.io"):
        assert [r["step"] for r in read_jsonl(path)] == [1, 3]
    assert len(caplog.records) == 1


def test_append_after_torn_line_starts_a_fresh_line_and_nothing_valid_is_lost(tmp_path):
    """Issue 10 case 4: on main the next append was glued onto the torn line and dropped with it."""
    path = tmp_path / "results.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a") as f:
        f.write('{"step": 2, "metr')  # disk full / kill during the write
    append_jsonl(path, {"step": 3})
    append_jsonl(path, {"step": 4})
    assert path.read_text().splitlines()[1:] == ['{"step": 2, "metr', '{"step": 3}', '{"step": 4}']
    assert [r["step"] for r in read_jsonl(path)] == [1, 3, 4]


def test_record_glued_onto_a_torn_line_by_an_older_version_is_recovered(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo{"step": 3}\n{"step": 4}\n')  # main's failure, then one more
    assert [r["step"] for r in read_jsonl(path)] == [1, 3, 4]


def test_atomic_write_fsyncs_the_directory_after_the_rename(tmp_path, monkeypatch):
    synced: list[bool] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_json(tmp_path / "state.json", {"state": "finished"})
    assert synced == [False, True]  # the file's data, then the directory holding the rename


def test_remove_stale_tmp_deletes_only_temporaries(tmp_path):
    from clipscale.io import remove_stale_tmp

    (tmp_path / ".state.json.x1y2.tmp").write_text("half")
    (tmp_path / ".latest.pt.1234.tmp").write_text("half")
    (tmp_path / "state.json").write_text("{}")
    (tmp_path / "notes.tmp").write_text("a user's file, not ours")
    removed = remove_stale_tmp(tmp_path)
    assert sorted(p.name for p in removed) == [".latest.pt.1234.tmp", ".state.json.x1y2.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp", "state.json"]


def test_read_toml_errors_name_the_file_on_one_line(tmp_path):
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
