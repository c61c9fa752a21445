"""The training data path: shard specs, data_size, passes, (seed, step) determinism, bad samples."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from clipscale.data.loader import SampleReader, StepBatches, StepSampler, build_sources, decode_image
from clipscale.data.shard_index import build_index, expand_spec
from clipscale.errors import ClipscaleError


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_bad_shards(good_shard: Path, out: Path) -> Path:
    """00000.tar: 20 good samples, one corrupt PNG, one caption missing, one empty caption;
    00001.tar: empty; 00002.tar: 10 more good samples."""
    from clipscale.data.synth import iter_shard_samples

    samples = list(iter_shard_samples(good_shard))[:30]
    out.mkdir(parents=True)
    with tarfile.open(out / "00000.tar", "w") as tar:
        for s in samples[:10]:
            _add(tar, f"{s['__key__']}.png", s["png"])
            _add(tar, f"{s['__key__']}.txt", s["txt"])
        _add(tar, "corrupt.png", b"\x89PNG\r\n\x1a\n not really a png")
        _add(tar, "corrupt.txt", b"a red circle")
        _add(tar, "nocaption.png", samples[0]["png"])
        _add(tar, "emptycap.png", samples[1]["png"])
        _add(tar, "emptycap.txt", b"  ")
        for s in samples[10:20]:
            _add(tar, f"{s['__key__']}.png", s["png"])
            _add(tar, f"{s['__key__']}.txt", s["txt"])
    with tarfile.open(out / "00001.tar", "w"):
        pass
    with tarfile.open(out / "00002.tar", "w") as tar:
        for s in samples[20:30]:
            _add(tar, f"{s['__key__']}.png", s["png"])
            _add(tar, f"{s['__key__']}.txt", s["txt"])
    return out


def test_spec_expansion_and_errors(synth_train_shards: Path, tmp_path: Path) -> None:
    shard = synth_train_shards / "00000.tar"
    assert expand_spec(str(synth_train_shards)) == [shard]
    assert expand_spec(f"{synth_train_shards}/{{00000..00000}}.tar") == [shard]
    assert expand_spec(f"{shard}::{shard}") == [shard, shard]
    with pytest.raises(ClipscaleError, match="matches no files"):
        expand_spec(str(tmp_path / "*.tar"))
    with pytest.raises(ClipscaleError, match=r"00001\.tar.*does not exist"):
        expand_spec(f"{synth_train_shards}/{{00000..00003}}.tar")


def test_data_size_takes_the_first_samples_and_checks_availability(synth_train_shards: Path) -> None:
    shards = expand_spec(str(synth_train_shards))
    full = build_index(shards, None)
    first = build_index(shards, 100)
    assert len(full) == 2000 and len(first) == 100
    assert np.array_equal(first.image_offset, full.image_offset[:100])
    with pytest.raises(ClipscaleError, match="data_size 2001 exceeds the 2000"):
        build_index(shards, 2001)


def test_step_mapping_is_pure_and_passes_cover_data_once() -> None:
    sampler = StepSampler([100], [1.0], batch_size=20, seed=3)
    steps = [sampler.step_samples(k) for k in range(15)]  # 300 samples = 3 passes of 100
    again = StepSampler([100], [1.0], batch_size=20, seed=3)
    assert [again.step_samples(k) for k in (14, 2, 7)] == [steps[14], steps[2], steps[7]]  # any order
    passes = [[i for s in steps[5 * p : 5 * p + 5] for _, i in s] for p in range(3)]
    for indices in passes:
        assert sorted(indices) == list(range(100))  # each pass: every sample exactly once
    assert passes[0] != passes[1] != passes[2]  # reshuffled each pass
    other_seed = StepSampler([100], [1.0], batch_size=20, seed=4)
    assert other_seed.step_samples(0) != steps[0]


def test_weighted_sources_split_each_batch_by_weight() -> None:
    sampler = StepSampler([50, 1000], [0.25, 0.75], batch_size=40, seed=0)
    batches = [sampler.step_samples(k) for k in range(10)]
    assert all(len(b) == 40 for b in batches)
    assert sum(src == 0 for b in batches for src, _ in b) == 100  # 25 % of 400
    seen_small = [i for b in batches for src, i in b if src == 0]
    assert sorted(seen_small) == sorted(list(range(50)) * 2)  # two full passes of the small source
    with pytest.raises(ClipscaleError, match="weights"):
        StepSampler([10, 10], [0.01, 0.99], batch_size=40, seed=0)


def test_bad_samples_are_skipped_counted_and_replaced_deterministically(synth_train_shards: Path,
                                                                        tmp_path: Path) -> None:
    from clipscale.models import get_tokenizer

    bad = write_bad_shards(synth_train_shards / "00000.tar", tmp_path / "bad")
    [(index, _)] = build_sources(str(bad), None)
    assert len(index) == 32  # 30 good + corrupt png + empty caption (found at decode time)
    assert index.skipped == {"incomplete_samples": 1, "empty_shards": 1, "unreadable_shards": 0}
    sampler = StepSampler([len(index)], [1.0], batch_size=32, seed=0)
    data = StepBatches(sampler, SampleReader([index], 32), get_tokenizer("tiny-S0"), rank=0, world_size=1)
    batch = data[0]  # one full pass: contains both undecodable samples
    assert batch.images.shape == (32, 3, 32, 32) and batch.texts.shape[0] == 32
    assert batch.skipped == 2
    again = data[0]
    assert torch_equal(again.images, batch.images) and torch_equal(again.texts, batch.texts)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_ranks_decode_contiguous_slices_of_the_same_global_batch(synth_train_shards: Path) -> None:
    from clipscale.models import get_tokenizer

    [(index, _)] = build_sources(str(synth_train_shards), 200)
    sampler = StepSampler([200], [1.0], batch_size=16, seed=0)
    reader, tok = SampleReader([index], 32), get_tokenizer("tiny-S0")
    whole = StepBatches(sampler, reader, tok, 0, 1)[3]
    halves = [StepBatches(sampler, reader, tok, r, 2)[3] for r in (0, 1)]
    assert torch_equal(whole.images[:8], halves[0].images) and torch_equal(whole.images[8:], halves[1].images)


def test_decode_resizes_to_model_size() -> None:
    import torch
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(buf, format="JPEG")
    arr = decode_image(buf.getvalue(), 32)
    assert arr.shape == (3, 32, 32) and arr.dtype == torch.uint8 and arr[0].float().mean() > 200


def test_fast_tokenize_equals_the_model_tokenizer() -> None:
    from clipscale.data.loader import tokenize
    from clipscale.models import get_tokenizer

    tok = get_tokenizer("tiny-S0")
    caps = ["a red circle", "two small blue squares above a striped star " * 5, "Unknownword heart"]
    assert torch_equal(tokenize(tok, caps), tok(caps))
