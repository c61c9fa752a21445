"""Unwritable outputs are one-line errors (issue 10, case 6): a read-only directory in every verb that
writes, and a full disk when a checkpoint is saved ("no space left on DIR", not torch's
"enforce fail at inline_container.cc"). Exit status 2, never a traceback.

Real file systems, not mocks: as root (permissions do not stop root) a read-only bind mount or a full
tmpfs; otherwise a chmod'ed directory. Where neither can be made, the test skips.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipscale.cli import main
from clipscale.errors import ClipscaleError


def _sh(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _writable(directory: Path) -> bool:
    probe = directory / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """`directory` (created if needed, contents kept) made read-only for the test's duration."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        mounted = _sh("mount", "--bind", str(directory), str(directory))
        if not (mounted and _sh("mount", "-o", "remount,bind,ro", str(directory))):
            if mounted:
                _sh("umount", str(directory))
            pytest.skip("root without mount: cannot make a read-only directory")
        undo = ["umount", str(directory)]
    else:
        dirs = [directory, *[p for p in directory.rglob("*") if p.is_dir()]]
        for d in dirs:
            d.chmod(0o555)
        undo = ["chmod", "-R", "u+w", str(directory)]
    try:
        if _writable(directory):
            pytest.skip("could not make a read-only directory here")
        yield directory
    finally:
        _sh(*undo)


@contextlib.contextmanager
def full_disk(directory: Path, room: int = 0) -> Iterator[Path]:
    """A small tmpfs at `directory`, filled but for `room` bytes (root only)."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not _sh("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(directory)):
        pytest.skip("a full file system needs root (tmpfs)")
    try:
        with contextlib.suppress(OSError), open(directory / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        filler = directory / "filler"
        os.truncate(filler, max(0, filler.stat().st_size - room))
        yield directory
    finally:
        _sh("umount", str(directory))


def _one_line_error(capsys, rc: int, must_name: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("clipscale: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert must_name in err, err
    return err


STUDY = """
[study]
name = "ro"
output_dir = "{out}"

[datasets.uni]
synth = "uniform"
samples = 200

[train]
batch_size = 32
workers = 0

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 200
samples_seen = 64

[eval]
suite = "synth"
samples_per_task = 20
"""


def _study(tmp_path: Path, out: Path) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(out=out))
    return path


def test_read_only_study_output_dir_in_run_results_report(tmp_path: Path, capsys) -> None:
    with read_only(tmp_path / "ro") as ro:
        study = _study(tmp_path, ro)
        err = _one_line_error(capsys, main(["run", str(study)]), str(ro))
        assert "plan.json" in err
        _one_line_error(capsys, main(["results", str(study)]), str(ro / "results.csv"))
        _one_line_error(capsys, main(["report", str(study), "--out", str(ro / "r.html")]), str(ro))


def test_read_only_fit_save_and_plot(tmp_path: Path, capsys) -> None:
    table = tmp_path / "t.csv"
    rows = [(c, 0.9 * c ** -0.3) for c in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)]
    table.write_text("compute,err\n" + "".join(f"{c},{e}\n" for c, e in rows))
    with read_only(tmp_path / "ro") as ro:
        for flag, name in (("--save", "fit.json"), ("--plot", "fit.png")):
            rc = main(["fit", str(table), "--C", "compute", "--y", "err", flag, str(ro / name)])
            _one_line_error(capsys, rc, str(ro))


def test_read_only_output_dir_in_train(tmp_path: Path, synth_train_shards: Path, capsys) -> None:
    with read_only(tmp_path / "ro") as ro:
        rc = main(["train", "--model", "tiny-S0", "--train-data", str(synth_train_shards), "--samples-seen",
                   "64", "--batch-size", "32", "--workers", "0", "--output-dir", str(ro / "run")])
        _one_line_error(capsys, rc, str(ro))


def test_read_only_run_dir_in_eval(tmp_path: Path, tiny_trained_run: Path, synth_eval_sets: Path,
                                   capsys) -> None:
    run = tmp_path / "ro"
    shutil.copytree(tiny_trained_run, run, ignore=shutil.ignore_patterns("results.jsonl"))
    with read_only(run):
        rc = main(["eval", str(run), "--suite", "synth", "--data-root", str(synth_eval_sets)])
        # eval takes the run's lock before anything else (issue 20), so the first path it cannot write,
        # named in the one-line error, is RUN_DIR/.lock: it stops before evaluating anything
        _one_line_error(capsys, rc, str(run / ".lock"))
    assert not (run / "results.jsonl").exists()


class _Tokenizer:
    def state(self) -> dict:
        return {"kind": "test"}


@pytest.mark.parametrize("room", [0, 96 * 1024])  # full already; fills up part-way (torch's RuntimeError)
def test_full_disk_checkpoint_save_says_no_space_left(tmp_path: Path, room: int) -> None:
    import torch

    from clipscale.models.checkpoint import save_checkpoint

    with full_disk(tmp_path / "full", room) as full:
        with pytest.raises(ClipscaleError, match=f"^no space left on {full} \\(writing latest.pt\\)$"):
            save_checkpoint(full / "latest.pt", model=torch.nn.Linear(256, 256), model_name="m",
                            model_config={}, tokenizer=_Tokenizer(), step=1, samples_seen=32, compute=1.0,
                            gmacs=1.0)
        assert sorted(p.name for p in full.iterdir()) == ["filler"]  # no temporary file left behind


class _FillsUp:
    """A stream that takes `room` bytes, then fails like a full disk."""

    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, data: bytes) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(data)

    def flush(self) -> None:
        pass


def test_keep_write_error_recovers_enospc_behind_torch_runtime_error() -> None:
    """torch.save turns a failed write part-way into "enforce fail at inline_container.cc"."""
    import torch

    from clipscale.io import KeepWriteError, write_error

    out = KeepWriteError(_FillsUp(1000))
    with pytest.raises(RuntimeError, match="inline_container"):
        torch.save({"w": torch.zeros(10_000)}, out)
    with pytest.raises(OSError) as info:
        out.reraise()
    assert info.value.errno == errno.ENOSPC
    message = str(write_error(info.value, "/ckpt/dir/latest.pt"))
    assert message == "no space left on /ckpt/dir (writing latest.pt)"


def test_a_recorded_failure_is_the_errors_own_line() -> None:
    """A run's state and the report quote a ClipscaleError as its message (it names the file and field),
    and any other exception with its type: a bug's first clue."""
    from clipscale.errors import error_line

    assert error_line(ClipscaleError("train_data: shard a.tar does not exist\nmore")) == \
        "train_data: shard a.tar does not exist"
    assert error_line(ValueError("bad")) == "ValueError: bad"
    assert len(error_line(RuntimeError("x" * 900))) == 500


def test_predict_on_a_file_that_is_no_saved_fit_says_what_it_expected(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "results.csv"
    table.write_text("C,acc1\n1,0.5\n")
    assert main(["predict", str(table), "--C", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{table}: cannot read a saved fit" in err and "not JSON" in err
    assert main(["predict", str(tmp_path / "nofits.json"), "--C", "1"]) == 2
    assert "nofits.json: no such file; expected a saved fit" in capsys.readouterr().err
