"""Stream data mode (data/stream.py): seeded shard/sample order, one pass = every sample once,
resume at any step = the uninterrupted stream, data_size = the first N samples, corrupt samples
replaced and counted, and an end-to-end stream-mode run that resumes to the same losses."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from clipscale.data.stream import StreamBatches, plan_shards
from clipscale.errors import ClipscaleError
from clipscale.io import read_jsonl
from tests.fixtures_train import tiny_config
from tests.test_train_data import write_bad_shards

SAMPLES, SHARD = 800, 100


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clipscale.data.synth import write_train_shards

    out = tmp_path_factory.mktemp("stream") / "train"
    write_train_shards(out, samples=SAMPLES, seed=0, image_size=32, shard_size=SHARD)
    return out


class KeyStream(StreamBatches):
    """The real stream with decoding replaced by the samples' keys (what a test can compare)."""

    def _decode(self, samples: list[dict], step: int) -> list[str]:  # type: ignore[override]
        return [s["__key__"] for s in samples]


def _keys(shards: Path, *, rank: int = 0, world: int = 2, workers: int = 2, start: int = 0, steps: int = 20,
          seed: int = 0, data_size: int | None = None, batch: int = 40) -> list[list[str]]:
    from clipscale.data.loader import make_loader

    ds = KeyStream(plan_shards(str(shards), data_size), image_size=32, tokenizer=None, batch_size=batch,
                   seed=seed, rank=rank, world_size=world, workers=workers, shuffle_buffer=64)
    loader = make_loader(ds, start, start + steps, workers=workers, pin_memory=False)
    return [b for b, _ in zip(loader, range(steps))]


def _all_keys(shards: Path) -> list[str]:
    from clipscale.data.stream import _read_shard

    return [s["__key__"] for p in sorted(shards.glob("*.tar")) for s in _read_shard(p, None)]


def test_one_pass_sees_every_sample_once_and_order_is_seeded(shards: Path) -> None:
    per_rank = [_keys(shards, rank=r) for r in (0, 1)]  # 20 steps x 40 = one pass of 800
    seen = [k for rank in per_rank for batch in rank for k in batch]
    assert len(seen) == SAMPLES and sorted(seen) == sorted(_all_keys(shards))
    assert _keys(shards, rank=1) == per_rank[1]  # same seed, same batches
    assert _keys(shards, rank=1, seed=1) != per_rank[1]
    second = [k for r in (0, 1) for b in _keys(shards, rank=r, start=20) for k in b]  # pass 2
    assert sorted(second) == sorted(seen) and second != seen


@pytest.mark.parametrize("data_size", [None, 800])  # unknown counts: read-through; known: skip passes
def test_resume_at_any_step_continues_the_uninterrupted_stream(shards: Path, data_size: int | None) -> None:
    full = _keys(shards, rank=1, steps=47, data_size=data_size)
    for start in (7, 20, 33):
        assert _keys(shards, rank=1, start=start, steps=47 - start, data_size=data_size) == full[start:]


def test_data_size_is_the_first_samples_in_shard_order(shards: Path) -> None:
    plan = plan_shards(str(shards), 250)
    assert [p.name for p in plan.shards] == ["00000.tar", "00001.tar", "00002.tar"]
    assert plan.limits == [None, None, 50] and plan.size == 250
    seen = {k for b in _keys(shards, world=1, steps=40, data_size=250, batch=20) for k in b}
    assert seen == set(_all_keys(shards)[:250])
    (shards / "00000_stats.json").write_text(json.dumps({"successes": 60}))  # img2dataset's count wins
    try:
        assert plan_shards(str(shards), 250).limits == [None, None, 90]
    finally:
        (shards / "00000_stats.json").unlink()
    with pytest.raises(ClipscaleError, match="data_size 900 exceeds the 800 samples"):
        plan_shards(str(shards), 900)
    with pytest.raises(ClipscaleError, match="at least world_size x workers = 4 shards, got 3"):
        _keys(shards, data_size=250)


def _run(shards: Path, out: Path, **kw):
    return tiny_config(shards, out, **{"data_mode": "stream", "samples_seen": 8 * 32, "log_every": 1,
                                       "workers": 1, "checkpoint_points": [0.5, 1.0], **kw})


def test_stream_run_resumes_to_the_same_losses_and_counts_corrupt_samples(
        shards: Path, synth_train_shards: Path, tmp_path: Path) -> None:
    import clipscale.train.loop as loop
    from clipscale.train import train

    train(_run(shards, tmp_path / "full"))
    save = loop._save

    def save_then_die(s, step, *, point):
        save(s, step, point=point)
        if step == 4:
            raise KeyboardInterrupt

    loop._save = save_then_die
    try:
        with contextlib.suppress(KeyboardInterrupt):
            train(_run(shards, tmp_path / "resumed"))
    finally:
        loop._save = save
    # keep_latest: the finished run's latest.pt stays, for the refused resume below
    summary = train(_run(shards, tmp_path / "resumed", resume="auto", keep_latest=True))
    assert summary["state"] == "finished" and summary["unique_samples"] is None
    losses = [[r["loss"] for r in read_jsonl(tmp_path / d / "metrics.jsonl")] for d in ("full", "resumed")]
    assert len(losses[0]) == 8 and losses[0] == losses[1]
    with pytest.raises(ClipscaleError, match="cannot resume a stream-mode run with workers=2"):
        train(_run(shards, tmp_path / "resumed", resume="auto", workers=2))

    bad = write_bad_shards(synth_train_shards / "00000.tar", tmp_path / "bad")
    summary = train(tiny_config(bad, tmp_path / "bad_run", data_mode="stream", batch_size=8, samples_seen=64,
                                workers=0))
    assert summary["state"] == "finished"
    assert summary["skipped_samples"] >= 4  # 3 bad of 33 groups: all in pass 1, >= 1 in 31 of pass 2
    losses = [r["loss"] for r in read_jsonl(tmp_path / "bad_run" / "metrics.jsonl")]
    assert torch.isfinite(torch.tensor(losses)).all()


def _write_tar(path: Path, samples: list[dict]) -> None:
    import tarfile

    from tests.test_train_data import _add

    with tarfile.open(path, "w") as tar:
        for s in samples:
            _add(tar, f"{s['__key__']}.png", s["png"])
            _add(tar, f"{s['__key__']}.txt", s["txt"])


def _cut_in_caption(path: Path, index: int) -> None:
    """Truncate the tar in the middle of its `index`-th caption's data (a cut copy or a full disk)."""
    import tarfile

    with tarfile.open(path) as tar:
        txt = [m for m in tar.getmembers() if m.name.endswith(".txt")][index]
    path.write_bytes(path.read_bytes()[: txt.offset_data + txt.size // 2])


def _stats(path: Path, successes: int) -> Path:
    stats = path.with_name(f"{path.stem}_stats.json")
    stats.write_text(json.dumps({"count": successes, "successes": successes}))
    return stats


@pytest.fixture
def messy_shards(synth_train_shards: Path, tmp_path: Path) -> Path:
    """00000: 40 whole samples; 00001: 40 per its stats, cut in caption 25 (24 whole + 1 cut);
    00002: an empty tar; 00003: 0 bytes; 00004: not a tar; 00005: 30 samples, its stats (50) older
    than the tar. Stats count 40 + 40 + 50 = 130; the tars hold 40 + 25 + 30 = 95 samples."""
    import os
    import tarfile

    from clipscale.data.synth import iter_shard_samples

    samples = list(iter_shard_samples(synth_train_shards / "00000.tar"))[:110]
    out = tmp_path / "messy"
    out.mkdir()
    _write_tar(out / "00000.tar", samples[:40])
    _stats(out / "00000.tar", 40)
    _write_tar(out / "00001.tar", samples[40:80])
    _stats(out / "00001.tar", 40)
    _cut_in_caption(out / "00001.tar", 24)
    tarfile.open(out / "00002.tar", "w").close()
    (out / "00003.tar").write_bytes(b"")
    (out / "00004.tar").write_bytes(b"this is not a tar file " * 100)
    _write_tar(out / "00005.tar", samples[80:110])
    stats = _stats(out / "00005.tar", 50)
    st = (out / "00005.tar").stat()
    os.utime(stats, (st.st_atime - 600, st.st_mtime - 600))  # the tar was rewritten after its stats
    return out


def test_cut_caption_is_never_a_complete_sample(messy_shards: Path) -> None:
    from clipscale.data.loader import DecodeError
    from clipscale.data.shard_index import index_tar
    from clipscale.data.stream import _decode_sample, _read_shard

    cut = messy_shards / "00001.tar"
    got = list(_read_shard(cut, None))
    assert len(got) == 25 and got[-1].get("__truncated__") and "txt" not in got[-1]
    assert not any(s.get("__truncated__") for s in got[:-1])
    with pytest.raises(DecodeError, match="truncated tar"):
        _decode_sample(got[-1], 32)
    complete, incomplete, ok = index_tar(cut)  # index mode: the cut caption is not indexed either
    assert (len(complete), incomplete, ok) == (24, 1, False)


def test_bad_shards_and_stale_stats_are_counted_and_recounted(messy_shards: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    from clipscale.train import train

    plan = plan_shards(str(messy_shards), None)
    assert [p.name for p in plan.shards] == ["00000.tar", "00001.tar", "00005.tar"]
    assert plan.counts == [40, 25, 30] and plan.size == 95  # not the stats' 130
    assert plan.skipped == {"empty_shards": 2, "unreadable_shards": 1, "truncated_shards": 1,
                            "stats_mismatch_shards": 2}
    summary = train(tiny_config(messy_shards, tmp_path / "run", data_mode="stream", batch_size=8,
                                samples_seen=120, workers=0))
    assert summary["state"] == "finished" and summary["unique_samples"] == 95
    skipped = summary["skipped"]
    assert (skipped["empty_shards"], skipped["unreadable_shards"], skipped["truncated_shards"],
            skipped["stats_mismatch_shards"]) == (2, 1, 1, 2)
    assert skipped["corrupt_samples"] >= 1  # the sample whose caption was cut: replaced, not trained
    err = capsys.readouterr().err
    assert "clipscale: warning: train_data: 2 shard(s) empty: 00002.tar, 00003.tar" in err
    assert "00001.tar (stats 40, tar 25)" in err and "00005.tar (stats 50, tar 30)" in err
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["skipped"] == skipped and saved["unique_samples"] == 95
