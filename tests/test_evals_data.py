"""Dataset adapters and suites: layouts read right; bad input -> one-line ClipscaleError naming the file."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from clipscale.errors import ClipscaleError
from clipscale.evals.adapters import load_dataset
from clipscale.evals.suite import load_suite


def png_bytes(value: int, size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_wds(root: Path, samples: list[dict[str, bytes]], *, kind: str = "classification",
             classnames: list[str] | None = None, templates: list[str] | None = None,
             split: str = "test") -> Path:
    """A CLIP_benchmark local wds directory: samples are {ext: bytes} dicts, one shard."""
    (root / split).mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / split / "0.tar", "w") as tar:
        for i, parts in enumerate(samples):
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"s{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (root / split / "nshards.txt").write_text("1\n")
    (root / "dataset_type.txt").write_text(kind + "\n")
    if classnames is not None:
        (root / "classnames.txt").write_text("".join(c + "\n" for c in classnames))
    if templates is not None:
        (root / "zeroshot_classification_templates.txt").write_text("".join(t + "\n" for t in templates))
    return root


def cls_samples(labels: list[int]) -> list[dict[str, bytes]]:
    return [{"png": png_bytes(40 * (i % 6)), "cls": str(y).encode()} for i, y in enumerate(labels)]


def test_wds_classification_reads_labels_classnames_templates(tmp_path: Path) -> None:
    root = make_wds(tmp_path / "d", cls_samples([0, 2, 1]), classnames=["a", "b", "c"], templates=["x {c}"])
    ds = load_dataset("wds", root, name="d")
    assert ds.kind == "classification" and ds.labels.tolist() == [0, 2, 1]
    assert ds.require_zeroshot() == (["a", "b", "c"], ["x {c}"])
    assert ds.images[1].read() == png_bytes(40)


def test_wds_retrieval_captions_are_txt_lines(tmp_path: Path) -> None:
    samples = [{"jpg": png_bytes(0), "txt": b"one\ntwo\nthree"}, {"png": png_bytes(9), "txt": b"four"}]
    ds = load_dataset("wds", make_wds(tmp_path / "r", samples, kind="retrieval"), name="r")
    assert ds.kind == "retrieval" and ds.captions == [["one", "two", "three"], ["four"]]


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    a = load_dataset("wds", make_wds(tmp_path / "a", cls_samples([0, 1]), classnames=["x", "y"]), name="a")
    b = load_dataset("wds", make_wds(tmp_path / "b", cls_samples([0, 1]), classnames=["x", "y"]), name="b")
    c = load_dataset("wds", make_wds(tmp_path / "c", cls_samples([1, 0]), classnames=["x", "y"]), name="c")
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_label_outside_class_list_names_the_dataset(tmp_path: Path) -> None:
    root = make_wds(tmp_path / "bad", cls_samples([0, 3]), classnames=["a", "b"], templates=["{c}"])
    with pytest.raises(ClipscaleError, match=r"bad.*label id 3.*outside the 2 class names"):
        load_dataset("wds", root, name="bad")


def test_empty_dataset_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ClipscaleError, match="has no samples"):
        load_dataset("wds", make_wds(tmp_path / "e", [], classnames=["a"]), name="e")
    with pytest.raises(ClipscaleError, match=r"nshards\.txt: not found"):
        load_dataset("wds", tmp_path / "nowhere", name="n")


def test_zeroshot_needs_classnames_and_templates(tmp_path: Path) -> None:
    ds = load_dataset("wds", make_wds(tmp_path / "nt", cls_samples([0]), classnames=["a"]), name="nt")
    with pytest.raises(ClipscaleError, match=r"nt: no zero-shot templates"):
        ds.require_zeroshot()
    ds = load_dataset("wds", make_wds(tmp_path / "nc", cls_samples([0]), templates=["{c}"]), name="nc")
    with pytest.raises(ClipscaleError, match=r"nc: no class names"):
        ds.require_zeroshot()


def test_imagefolder_with_classnames_file(tmp_path: Path) -> None:
    for cls, n in (("cat", 2), ("dog", 1)):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "f" / cls / f"{i}.png").write_bytes(png_bytes(i))
    ds = load_dataset("imagefolder", tmp_path / "f", name="f")
    assert ds.classnames == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1]
    (tmp_path / "names.txt").write_text("a cat\na dog\n")
    ds = load_dataset("imagefolder", tmp_path / "f", name="f", classnames=tmp_path / "names.txt")
    assert ds.classnames == ["a cat", "a dog"]
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(ClipscaleError, match=r"three.txt: 3 class names for 2 class folders"):
        load_dataset("imagefolder", tmp_path / "f", name="f", classnames=tmp_path / "three.txt")


def test_pairs_csv_and_json_group_captions_by_image(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(1))
    (tmp_path / "b.png").write_bytes(png_bytes(2))
    (tmp_path / "p.csv").write_text("image,caption\na.png,first\nb.png,second\na.png,third\n")
    ds = load_dataset("pairs", tmp_path / "p.csv", name="p")
    assert ds.captions == [["first", "third"], ["second"]]
    (tmp_path / "p.json").write_text(json.dumps([{"image": "b.png", "captions": ["x", "y"]}]))
    assert load_dataset("pairs", tmp_path / "p.json", name="p").captions == [["x", "y"]]
    (tmp_path / "m.csv").write_text("image,caption\nmissing.png,oops\n")
    with pytest.raises(ClipscaleError, match=r"m.csv: image 'missing.png' not found"):
        load_dataset("pairs", tmp_path / "m.csv", name="m")


def test_coco_captions_and_mismatched_ids(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(1))
    coco = {"images": [{"id": 7, "file_name": "a.png"}],
            "annotations": [{"image_id": 7, "caption": "c1"}, {"image_id": 7, "caption": "c2"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    assert load_dataset("coco", tmp_path / "c.json", name="c").captions == [["c1", "c2"]]
    coco["annotations"].append({"image_id": 8, "caption": "orphan"})
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(ClipscaleError, match=r"bad.json: annotation refers to image id 8"):
        load_dataset("coco", tmp_path / "bad.json", name="c")


def test_suite_parsing_and_errors(tmp_path: Path) -> None:
    suite = tmp_path / "s.toml"
    head = '[[dataset]]\nname = "d"\nformat = "wds"\npath = "d"\n'
    suite.write_text(head + 'task = ["linear_probe", "finetune"]\n'
                     '[dataset.options.linear_probe]\nfewshot_k = [0, 5]\n')
    s = load_suite(suite)
    assert [j.task for j in s.jobs] == ["linear_probe", "linear_probe_5shot", "finetune"]
    assert s.jobs[0].dataset.path == tmp_path / "d"  # relative to the suite file without a root
    assert load_suite(suite, root=tmp_path / "r").jobs[0].dataset.path == tmp_path / "r" / "d"
    suite.write_text(head + 'task = "zeroshot_magic"\n')
    with pytest.raises(ClipscaleError, match="unknown task 'zeroshot_magic'; valid tasks: zeroshot_class"):
        load_suite(suite)
    suite.write_text(head + 'task = "zeroshot_retrieval"\n[dataset.options.zeroshot_retrieval]\nk = [1]\n')
    with pytest.raises(ClipscaleError, match=r"unknown option\(s\) \['k'\].*recall_k"):
        load_suite(suite)
    with pytest.raises(ClipscaleError, match="needs a data root"):
        load_suite("synth")
    with pytest.raises(ClipscaleError, match="neither a file nor a built-in suite"):
        load_suite("nope")
    assert [j.task for j in load_suite("synth", root=tmp_path).jobs].count("zeroshot_classification") == 4


def _cut_copy(root: Path, out: Path, end: int, stats: int | None = None) -> Path:
    """A copy of wds set `root` whose shard holds only its first `end` bytes."""
    import shutil

    shutil.copytree(root, out)
    shard = out / "test" / "0.tar"
    shard.write_bytes((root / "test" / "0.tar").read_bytes()[:end])
    if stats is not None:
        (out / "test" / "0_stats.json").write_text(json.dumps({"successes": stats}))
    return out


@pytest.fixture(scope="module")
def hundred(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tarfile.TarInfo]]:
    root = make_wds(tmp_path_factory.mktemp("wds") / "full", cls_samples([i % 3 for i in range(100)]),
                    classnames=["a", "b", "c"])
    with tarfile.open(root / "test" / "0.tar") as tar:
        return root, tar.getmembers()  # s00000.png, s00000.cls, s00001.png, ...


def test_a_truncated_shard_keeps_its_whole_samples_and_counts_the_cut_one(hundred, tmp_path, caplog) -> None:
    root, members = hundred
    png50, cls50 = members[100], members[101]
    cuts = {  # where the shard ends -> whole samples read
        "inside sample 50's image": (png50.offset_data + 10, 50),
        "in the padding after sample 50's image": (png50.offset_data + png50.size + 1, 50),
        "inside sample 50's label header": (cls50.offset + 100, 50),
        "between samples 50 and 51": (members[102].offset, 51),
    }
    for what, (end, whole) in cuts.items():
        caplog.clear()
        ds = load_dataset("wds", _cut_copy(root, tmp_path / what, end), name="d")
        assert len(ds) == whole and ds.lost == 1, what  # without a declared count: the cut one, at least
        assert ds.labels.tolist() == [i % 3 for i in range(whole)]
        (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert "0.tar: truncated" in line and "at least 1 sample(s) lost" in line and "\n" not in line, what
    caplog.clear()
    ds = load_dataset("wds", _cut_copy(root, tmp_path / "stats", png50.offset_data + 10, stats=100), name="d")
    assert len(ds) == 50 and ds.lost == 50  # img2dataset's _stats.json gives the exact count
    assert "50 sample(s) lost" in caplog.text and "0_stats.json declares 100" in caplog.text


def test_a_whole_shard_or_one_cut_in_its_end_blocks_loses_nothing(hundred, tmp_path, caplog) -> None:
    root, members = hundred
    end = members[-1].offset_data + 512  # the last member's data and padding, then the end-of-archive zeros
    for name, size in (("whole", (root / "test" / "0.tar").stat().st_size), ("end", end + 100)):
        ds = load_dataset("wds", _cut_copy(root, tmp_path / name, size), name="d")
        assert len(ds) == 100 and ds.lost == 0, name
    assert "truncated" not in caplog.text
