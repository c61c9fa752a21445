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


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG signature + IHDR (valid CRC) claiming width x height 8-bit RGB, and IEND: no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _modes() -> dict[str, bytes]:
    from PIL import Image

    rgb = Image.fromarray((np.arange(40 * 40 * 3) % 256).astype(np.uint8).reshape(40, 40, 3))
    cmyk = io.BytesIO()
    rgb.convert("CMYK").save(cmyk, format="JPEG")
    webp = io.BytesIO()
    rgb.save(webp, format="WEBP")
    return {"palette": _png(rgb.convert("P")), "LA": _png(rgb.convert("LA")),
            "RGBA": _png(rgb.convert("RGBA")),
            "1": _png(rgb.convert("1")), "I;16": _png(Image.fromarray(np.full((40, 40), 32896, np.uint16))),
            "CMYK": cmyk.getvalue(), "WebP": webp.getvalue()}


@pytest.mark.parametrize("mode", ["palette", "LA", "RGBA", "1", "I;16", "CMYK", "WebP"])
def test_any_image_mode_decodes_to_8bit_rgb(mode: str) -> None:
    import torch

    arr = decode_image(_modes()[mode], 32)
    assert arr.shape == (3, 32, 32) and arr.dtype == torch.uint8
    if mode == "I;16":  # 32896 / 65535 of full scale -> 128 / 255, not clipped to 255 nor truncated to 0
        assert int(arr.min()) == int(arr.max()) == 128


def test_oversized_image_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PNG claiming 30000 x 30000 pixels is refused before any decoding (no 2.7 GB allocation)."""
    import torchvision.io

    from clipscale.data.images import ImageError, decode_rgb
    from clipscale.data.loader import DecodeError

    def no_decode(*a: object, **k: object) -> None:
        raise AssertionError("decoded an image over the pixel limit")
    monkeypatch.setattr(torchvision.io, "decode_image", no_decode)
    with pytest.raises(ImageError, match="image over the 178,956,970-pixel limit"):
        decode_rgb(header_only_png(30000, 30000))
    with pytest.raises(DecodeError, match="pixel limit"):
        decode_image(header_only_png(30000, 30000), 32)


def test_training_on_16bit_and_oversized_pngs_trains_and_counts_them(
        synth_train_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 16-bit PNG trains (no uint16 crash); an image over the pixel limit is skipped and counted like a
    corrupt one. The limit is lowered to 48 x 48 here so that the over-limit image is one that would
    decode: without the limit it would be trained on and not counted."""
    import json

    from PIL import Image

    from clipscale.data import images
    from clipscale.data.synth import iter_shard_samples
    from clipscale.io import read_jsonl
    from clipscale.train import train
    from tests.fixtures_train import tiny_config

    monkeypatch.setattr(images, "MAX_PIXELS", 48 * 48)
    samples = list(iter_shard_samples(synth_train_shards / "00000.tar"))[:30]
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tar:
        for s in samples:
            _add(tar, f"{s['__key__']}.png", s["png"])
            _add(tar, f"{s['__key__']}.txt", s["txt"])
        _add(tar, "deep.png", _png(Image.fromarray(np.full((32, 32), 40000, np.uint16))))
        _add(tar, "deep.txt", b"a red circle")
        _add(tar, "huge.png", _png(Image.new("RGB", (64, 64), (255, 0, 0))))
        _add(tar, "huge.txt", b"a red square")
    summary = train(tiny_config(shards, tmp_path / "run", samples_seen=64, checkpoint_points=[1.0],
                                log_every=1))
    assert summary["state"] == "finished"
    # each of the 2 steps is one full pass over the 32 samples: the huge one is met (and replaced) twice
    skipped = summary["skipped"]["corrupt_samples"]
    assert skipped >= 2 and summary["skipped_samples"] == skipped
    assert list(read_jsonl(tmp_path / "run" / "metrics.jsonl"))[-1]["skipped_samples"] == skipped
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["skipped"]["corrupt_samples"] == skipped
