"""The built-in synthetic data: determinism, layouts other tools read, vocabulary, held-out evals, errors."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipscale.cli import main
from clipscale.data.synth import (
    get_distribution,
    iter_shard_samples,
    list_distributions,
    list_eval_tasks,
    write_eval_sets,
    write_train_shards,
)
from clipscale.data.synth.captions import caption
from clipscale.data.synth.evalsets import TASKS, eval_sample
from clipscale.data.synth.scene import sample_objects, sample_rng
from clipscale.data.synth.shapes import COLOR_NAMES, SHAPES
from clipscale.data.synth.train_shards import write_shard
from clipscale.data.synth.vocab import VOCABULARY
from clipscale.errors import ClipscaleError

CLASSIFICATION_TASKS = ("synth_shape", "synth_color", "synth_count", "synth_relation")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _samples(root: Path) -> list[dict]:
    return [s for shard in sorted(root.glob("*.tar")) for s in iter_shard_samples(shard)]


def _no_leftovers(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# ---- training shards -------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_train_shards(tmp_path / name, samples=120, seed=seed, image_size=64, shard_size=50)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".tar"))


def test_shards_split_at_shard_size_and_regenerate_independently(tmp_path: Path) -> None:
    meta = write_train_shards(tmp_path / "d", samples=120, seed=1, shard_size=50, distribution="zipf")
    root = tmp_path / "d"
    assert sorted(p.name for p in root.iterdir()) == ["00000.tar", "00001.tar", "00002.tar", "meta.json"]
    counts = [len(list(iter_shard_samples(root / n))) for n in meta["shards"]]
    assert counts == [50, 50, 20]
    assert json.loads((root / "meta.json").read_text()) == meta
    assert {k: meta[k] for k in ("samples", "seed", "distribution", "image_size", "num_shards")} == {
        "samples": 120, "seed": 1, "distribution": "zipf", "image_size": 32, "num_shards": 3}
    assert meta["generator_version"]
    # a shard is a pure function of (seed, index range): shards can be generated in parallel
    zipf = get_distribution("zipf")
    write_shard(tmp_path / "again.tar", seed=1, start=50, stop=100, image_size=32, dist=zipf)
    assert (tmp_path / "again.tar").read_bytes() == (root / "00001.tar").read_bytes()


def test_train_samples_follow_img2dataset_layout(synth_train_shards: Path) -> None:
    meta = json.loads((synth_train_shards / "meta.json").read_text())
    samples = _samples(synth_train_shards)
    assert len(samples) == meta["samples"] == 2000
    assert meta["shards"] == ["00000.tar"]
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == len(keys)
    for s in samples[:200]:
        assert set(s) == {"__key__", "png", "txt", "json"}
        img = Image.open(io.BytesIO(s["png"]))
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (32, 32)
        record = json.loads(s["json"])
        assert record["key"] == s["__key__"] and record["caption"] == s["txt"].decode()
        assert 1 <= record["n_objects"] == len(record["objects"]) <= 4
        for obj in record["objects"]:
            assert obj["shape"] in SHAPES and obj["color"] in COLOR_NAMES


def test_webdataset_reads_train_shards(synth_train_shards: Path) -> None:
    import webdataset as wds

    ds = wds.WebDataset(str(synth_train_shards / "00000.tar"), shardshuffle=False).decode("rgb8")
    first = next(iter(ds.to_tuple("png", "txt")))
    assert first[0].shape == (32, 32, 3) and first[0].dtype == np.uint8 and first[1]


def test_png_is_lossless_and_objects_are_drawn_where_recorded(tmp_path: Path) -> None:
    from clipscale.data.synth.output import png_bytes

    arr = np.random.default_rng(0).integers(0, 256, size=(64, 32, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(arr))).convert("RGB")), arr)
    write_train_shards(tmp_path / "d", samples=30, seed=0, image_size=64)
    for s in _samples(tmp_path / "d"):
        img = np.asarray(Image.open(io.BytesIO(s["png"]))).astype(int)
        record = json.loads(s["json"])
        for obj in record["objects"]:
            if obj["color"] in ("white", "black"):
                continue
            # the centre pixel of a filled shape (not ring/cross/striped) carries the object's colour
            if obj["shape"] in ("ring", "cross", "star") or obj["texture"] != "plain":
                continue
            side = 14 if obj["size"] == "small" else 20
            cy, cx = obj["y"] + side // 2, obj["x"] + side // 2
            assert np.abs(img[cy, cx] - np.array(obj["rgb"])).max() < 50


# ---- captions and distributions --------------------------------------------------------------------


def test_every_caption_and_prompt_uses_only_vocabulary_words() -> None:
    vocab = set(VOCABULARY)
    texts: list[str] = []
    for name in list_distributions():
        dist = get_distribution(name)
        for i in range(2500):
            rng = sample_rng(7, i)
            texts.append(caption(rng, sample_objects(rng, dist, 32), dist.style))
    for task in TASKS:
        texts += [t.format(c=c) for t in task.templates for c in task.classnames]
    retrieval = next(t for t in TASKS if t.kind == "retrieval")
    for i in range(100):
        record = json.loads(eval_sample(retrieval, 0, i, 32, get_distribution("uniform"))[1]["json"])
        texts += record["captions"]
    for text in texts:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", text), text
        assert set(text.split()) <= vocab, (text, set(text.split()) - vocab)
        assert len(text.split()) <= 30  # fits a 32-token context with start/end tokens
    assert len(set(texts)) > 2000  # a varied grammar, not a handful of templates


def test_distributions_differ_in_attribute_frequencies_and_caption_length() -> None:
    stats = {}
    for name in ("uniform", "zipf"):
        dist = get_distribution(name)
        shapes: Counter[str] = Counter()
        colors: Counter[str] = Counter()
        words = 0
        for i in range(3000):
            rng = sample_rng(0, i)
            objects = sample_objects(rng, dist, 32)
            shapes.update(o.shape for o in objects)
            colors.update(o.color for o in objects)
            words += len(caption(rng, objects, dist.style).split())
        stats[name] = (shapes, colors, words / 3000)
    uni_shapes, uni_colors, uni_len = stats["uniform"]
    zipf_shapes, zipf_colors, zipf_len = stats["zipf"]
    assert max(uni_shapes.values()) / min(uni_shapes.values()) < 1.3
    assert max(uni_colors.values()) / min(uni_colors.values()) < 1.4
    assert zipf_shapes[SHAPES[0]] > 5 * zipf_shapes[SHAPES[-1]]
    assert zipf_colors[COLOR_NAMES[0]] > 5 * zipf_colors[COLOR_NAMES[-1]]
    assert zipf_len < 0.7 * uni_len


def test_unknown_distribution_lists_valid_names() -> None:
    assert {"uniform", "zipf"} <= set(list_distributions())
    with pytest.raises(ClipscaleError, match=r"valid: .*uniform.*zipf"):
        get_distribution("laion")


# ---- eval sets -------------------------------------------------------------------------------------


def test_eval_sets_match_clip_benchmark_wds_layout(synth_eval_sets: Path) -> None:
    assert sorted(p.name for p in synth_eval_sets.iterdir() if p.is_dir()) == sorted(list_eval_tasks())
    assert set(CLASSIFICATION_TASKS) | {"synth_retrieval"} == set(list_eval_tasks())
    for name in list_eval_tasks():
        root = synth_eval_sets / name
        assert (root / "test" / "nshards.txt").read_text() == "1\n"
        assert sorted(p.name for p in (root / "test").iterdir()) == ["0.tar", "nshards.txt"]
        kind = (root / "dataset_type.txt").read_text().strip()
        samples = list(iter_shard_samples(root / "test" / "0.tar"))
        assert len(samples) == 200
        assert re.fullmatch(r"s\d{7}", samples[0]["__key__"])
        if name == "synth_retrieval":
            assert kind == "retrieval" and not (root / "classnames.txt").exists()
            for s in samples:
                assert set(s) == {"__key__", "png", "txt", "json"}
                lines = s["txt"].decode().splitlines()
                assert len(lines) == len(set(lines)) == 5
            continue
        assert kind == "classification"
        classes = (root / "classnames.txt").read_text().splitlines()
        templates = (root / "zeroshot_classification_templates.txt").read_text().splitlines()
        assert len(classes) >= 4 and templates and all("{c}" in t for t in templates)
        labels = [int(s["cls"]) for s in samples]
        assert all(set(s) == {"__key__", "png", "cls", "json"} for s in samples)
        assert set(Counter(labels)) == set(range(len(classes)))
        assert max(Counter(labels).values()) - min(Counter(labels).values()) <= 1  # balanced


def test_clip_benchmark_read_path_decodes_eval_sets(synth_eval_sets: Path) -> None:
    """The exact webdataset pipeline of clip_benchmark/datasets/builder.py build_wds_dataset."""
    import webdataset as wds

    exts = ["webp", "png", "jpg", "jpeg"]
    pattern = str(synth_eval_sets / "synth_color" / "test" / "{0..0}.tar")
    ds = wds.WebDataset(pattern, nodesplitter=lambda src: src, shardshuffle=False).decode(
        wds.autodecode.ImageHandler("pil", extensions=exts)).to_tuple(exts, "cls")
    img, label = next(iter(ds))
    assert img.size == (32, 32) and label == 0
    pattern = str(synth_eval_sets / "synth_retrieval" / "test" / "{0..0}.tar")
    ds = wds.WebDataset(pattern, nodesplitter=lambda src: src, shardshuffle=False).decode(
        wds.autodecode.ImageHandler("pil", extensions=exts)).to_tuple(exts, "txt")
    ds = ds.map_tuple(None, str.splitlines)
    img, captions = next(iter(ds))
    assert img.size == (32, 32) and len(captions) == 5


def test_eval_labels_are_true_of_the_scenes(synth_eval_sets: Path) -> None:
    for name in CLASSIFICATION_TASKS:
        for s in iter_shard_samples(synth_eval_sets / name / "test" / "0.tar"):
            rec = json.loads(s["json"])
            label, objs = int(s["cls"]), rec["objects"]
            if name == "synth_shape":
                assert len(objs) == 1 and objs[0]["shape"] == SHAPES[label]
            elif name == "synth_color":
                assert len(objs) == 1 and objs[0]["color"] == COLOR_NAMES[label]
            elif name == "synth_count":
                assert len(objs) == label + 1
            else:
                red, blue = objs
                assert (red["color"], blue["color"]) == ("red", "blue")
                expected = [red["row"] < blue["row"] and red["col"] == blue["col"],
                            red["row"] > blue["row"] and red["col"] == blue["col"],
                            red["col"] < blue["col"] and red["row"] == blue["row"],
                            red["col"] > blue["col"] and red["row"] == blue["row"]]
                assert expected.index(True) == label


def test_eval_images_are_held_out_from_training(synth_train_shards: Path, synth_eval_sets: Path) -> None:
    """Same seed 0 for both: eval draws come from disjoint seed streams, so no image repeats."""
    def digest(png: bytes) -> str:
        return hashlib.sha1(np.asarray(Image.open(io.BytesIO(png))).tobytes()).hexdigest()

    train = {digest(s["png"]) for s in _samples(synth_train_shards)}
    evals = {digest(s["png"]) for t in list_eval_tasks() for s in _samples(synth_eval_sets / t / "test")}
    assert len(train) == 2000 and len(evals) == 1000
    assert not train & evals
    assert len({t.stream for t in TASKS} | {0}) == len(TASKS) + 1


def test_eval_sets_are_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_eval_sets(tmp_path / name, seed=5, samples_per_task=12, image_size=64, distribution="zipf")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


# ---- bad input, atomicity, CLI ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "synth", "--samples", "0"],
        ["data", "synth", "--samples", "-3"],
        ["data", "synth", "--samples", "10", "--distribution", "nope"],
        ["data", "synth", "--samples", "10", "--shard-size", "20000"],
        ["data", "synth", "--samples", "10", "--seed", "-1"],
        ["data", "synth-eval", "--samples-per-task", "0"],
        ["data", "synth-eval", "--distribution", "nope"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clipscale: error: ") and "\n" not in err
    assert sorted(tmp_path.iterdir()) == []


def test_bad_image_size_and_unwritable_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ClipscaleError, match="image_size"):
        write_train_shards(tmp_path / "x", samples=5, image_size=48)
    with pytest.raises(SystemExit) as exc:  # argparse rejects it before the library sees it
        main(["data", "synth", "--samples", "5", "--image-size", "48", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["data", "synth", "--samples", "5", "--out", str(blocker / "sub")]) == 2
    assert "cannot create" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_non_empty_dir_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ClipscaleError, match="not empty"):
        write_train_shards(out, samples=5)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    write_train_shards(out, samples=5, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "meta.json"]
    _no_leftovers(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_eval_sets(empty, samples_per_task=3)
    assert (empty / "synth_shape" / "test" / "0.tar").exists()
    _no_leftovers(tmp_path)


def test_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clipscale.data.synth.train_shards as train_shards

    calls = []

    def failing_write_shard(path: Path, **kwargs: object) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        original(path, **kwargs)

    original = train_shards.write_shard
    monkeypatch.setattr(train_shards, "write_shard", failing_write_shard)
    with pytest.raises(ClipscaleError, match="No space left"):
        write_train_shards(tmp_path / "d", samples=30, shard_size=10)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_data_and_prints_one_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train"
    argv = ["data", "synth", "--out", str(out), "--samples", "25", "--seed", "2", "--image-size", "64",
            "--distribution", "zipf", "--shard-size", "10"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "25 samples" in line and "3 shard" in line
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["samples"], meta["seed"], meta["image_size"], meta["distribution"]) == (25, 2, 64, "zipf")
    assert main(["data", "synth-eval", "--out", str(tmp_path / "ev"), "--samples-per-task", "4"]) == 0
    assert "5 eval sets" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev" / "meta.json").read_text())["samples_per_task"] == 4


def test_eval_sets_have_disjoint_train_split_for_probes(synth_eval_sets):
    """Linear probes fit on `train/`; no train-split image may equal a test image."""
    from clipscale.data.synth import iter_shard_samples

    for task in ("synth_shape", "synth_color", "synth_count", "synth_relation"):
        root = synth_eval_sets / task
        assert (root / "train" / "nshards.txt").read_text().strip() == "1"
        train = {s["png"] for s in iter_shard_samples(root / "train" / "0.tar")}
        test = {s["png"] for s in iter_shard_samples(root / "test" / "0.tar")}
        assert len(train) == len(test) and not train & test
    assert not (synth_eval_sets / "synth_retrieval" / "train").exists()
