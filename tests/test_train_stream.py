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
    summary = train(_run(shards, tmp_path / "resumed", resume="auto"))
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
