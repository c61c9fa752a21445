"""`clipscale data emoji`: a fake node_modules tree with the real packages' layout -> shards, eval sets,
suite, manifest, licences; read back with clipscale's own readers; split, determinism, errors, npm cache."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipscale.cli import main
from clipscale.data.emoji import PINS, build_emoji_dataset
from clipscale.data.emoji.concepts import concept_split, normalize_hexcode
from clipscale.data.emoji.packages import cache_dir
from clipscale.data.shard_index import build_index, expand_spec
from clipscale.data.synth import iter_shard_samples
from clipscale.errors import ClipscaleError
from clipscale.evals.suite import check_suite

SKIN = "1F3FB"
TONE = (40, 30, 20)


def _pick_concepts(n_train: int, n_unseen: int) -> list[str]:
    """Real-looking code points, chosen so both splits are populated (the split is the builder's)."""
    picked: dict[str, list[str]] = {"train": [], "unseen": []}
    for cp in range(0x1F600, 0x1F700):
        code = f"{cp:X}"
        split = concept_split(code)
        if len(picked[split]) < (n_train if split == "train" else n_unseen):
            picked[split].append(code)
    return picked["train"] + picked["unseen"]


CONCEPTS = _pick_concepts(6, 3)
KEYCAP = "0023-FE0F-20E3"  # variation selector in every package's spelling: joins by normalising
ONLY_OPENMOJI = CONCEPTS[0]  # google and twitter lack it: "missing in a style"
CORRUPT = CONCEPTS[1]  # google's PNG for it is corrupt: skipped and counted
WITH_SKINS = CONCEPTS[2]
CODES = [*CONCEPTS, normalize_hexcode(KEYCAP)]  # concept ids: FE0F removed
UNSEEN = {c for c in CODES if concept_split(c) == "unseen"}
TRAIN = set(CODES) - UNSEEN


def _colour(code: str) -> tuple[int, int, int]:
    h = int(code.replace("-", "")[-6:], 16)
    return (h * 37 % 200 + 20, h * 91 % 200 + 20, h * 53 % 200 + 20)


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    """64 px RGBA: a transparent border around an opaque disc of `colour`."""
    yy, xx = np.mgrid[:64, :64]
    arr = np.zeros((64, 64, 4), np.uint8)
    inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 20**2
    arr[inside] = (*colour, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGBA").save(path)


def _svg(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = "#{:02x}{:02x}{:02x}".format(*colour)
    path.write_text(f'<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">'
                    f'<circle cx="36" cy="36" r="22" fill="{fill}"/></svg>')


def _package(root: Path, name: str, version: str, licence: str = "LICENSE") -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": name, "version": version}))
    (pkg / licence).write_text(f"licence text of {name}\n")
    return pkg


def _emojibase(root: Path) -> None:
    pkg = _package(root, "emojibase-data", "17.0.0")
    data = [{"label": "regional indicator A", "hexcode": "1F1E6", "type": 1}]  # no group: not a concept
    for i, code in enumerate([*CONCEPTS, KEYCAP]):
        entry = {"label": f"concept {code.lower()} face", "hexcode": code, "order": i, "group": i % 2,
                 "subgroup": i % 3, "tags": ["face", f"tag{i}", f"word{i}", "extra", "more"]}
        if code == WITH_SKINS:
            entry["skins"] = [{"label": f"{entry['label']}: light skin tone", "hexcode": f"{code}-{SKIN}"}]
        data.append(entry)
    (pkg / "en").mkdir()
    (pkg / "en" / "data.json").write_text(json.dumps(data))
    (pkg / "meta").mkdir()
    groups = {"groups": {"0": "smileys-emotion", "1": "people-body"},
              "subgroups": {"0": "face-smiling", "1": "face-affection", "2": "hand-fingers-open"}}
    (pkg / "meta" / "groups.json").write_text(json.dumps(groups))


def _datasource(root: Path, style: str) -> None:
    pkg = _package(root, f"emoji-datasource-{style}", "16.0.0")
    entries = []
    for code in [*CONCEPTS, KEYCAP.replace("-FE0F", "")]:
        if code == ONLY_OPENMOJI:
            continue
        image = f"{code.lower()}.png"
        entry = {"unified": code, "image": image, f"has_img_{style}": True}
        if code == CORRUPT and style == "google":
            (pkg / "img" / style / "64").mkdir(parents=True, exist_ok=True)
            (pkg / "img" / style / "64" / image).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        else:
            _png(pkg / "img" / style / "64" / image, _colour(code))
        if code == WITH_SKINS:
            skin_image = f"{code.lower()}-{SKIN.lower()}.png"
            _png(pkg / "img" / style / "64" / skin_image, TONE)
            entry["skin_variations"] = {SKIN: {"unified": f"{code}-{SKIN}", "image": skin_image,
                                               f"has_img_{style}": True}}
        entries.append(entry)
    (pkg / "emoji.json").write_text(json.dumps(entries))


def _openmoji(root: Path) -> None:
    pkg = _package(root, "openmoji", "17.0.0", licence="LICENSE.txt")
    svg = pkg / "color" / "svg"
    for code in [*CONCEPTS, KEYCAP]:
        _svg(svg / f"{code}.svg", _colour(code))
    _svg(svg / f"{WITH_SKINS}-{SKIN}.svg", TONE)
    _svg(svg / "E000.svg", (1, 2, 3))  # an OpenMoji extra: no emojibase concept


@pytest.fixture()
def node_modules(tmp_path: Path) -> Path:
    root = tmp_path / "node_modules"
    _emojibase(root)
    _datasource(root, "google")
    _datasource(root, "twitter")
    _openmoji(root)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _keys(tar: Path) -> list[str]:
    return [str(s["__key__"]) for s in iter_shard_samples(tar)]


def _codes(keys: list[str]) -> set[str]:
    return {k.split("_", 1)[1] for k in keys}


# ---- what the build writes, read back by clipscale ------------------------------------------------


def test_shards_and_eval_sets_read_back_with_clipscales_readers(node_modules: Path, tmp_path: Path) -> None:
    out = tmp_path / "emoji"
    meta = build_emoji_dataset(out, packages=node_modules, image_size=16)
    train, unseen = TRAIN, UNSEEN
    for style in ("google", "twitter", "openmoji", "all"):
        index = build_index(expand_spec(str(out / "train" / style / "{00000..00000}.tar")), None)
        assert len(index) == meta["samples"][style]["train"] > 0
        assert index.skipped == {"incomplete_samples": 0, "empty_shards": 0, "unreadable_shards": 0}
    suite = check_suite(out / "emoji_suite.toml", root=out)  # a study's [eval] data_root = out
    assert {(j.dataset.name, j.task) for j in suite.jobs} == {
        (f"emoji_{s}_{kind}", f"zeroshot_{kind}") for s in ("google", "twitter", "openmoji")
        for kind in ("classification", "retrieval")}
    names = {normalize_hexcode(c): f"concept {c.lower()} face" for c in [*CONCEPTS, KEYCAP]}
    for job in suite.jobs:
        data = job.dataset.load()
        style = job.dataset.name.split("_")[1]
        expected = unseen - ({ONLY_OPENMOJI} if style != "openmoji" else set())
        assert len(data.images) == len(expected)
        if data.kind == "classification":
            assert sorted(data.classnames) == sorted(names[c] for c in unseen)  # the same classes per style
            assert all("{c}" in t for t in data.templates)
            assert {data.classnames[i] for i in data.labels} == {names[c] for c in expected}
        else:
            assert all(len(caps) >= 3 and names_in(caps, names) for caps in data.captions)
    # images: 16 px RGB, composited on white (the fake art's border is transparent), centre keeps its colour
    sample = next(s for s in iter_shard_samples(out / "train" / "twitter" / "00000.tar"))
    img = np.asarray(Image.open(io.BytesIO(sample["png"])))
    code = str(sample["__key__"]).split("_", 1)[1]
    assert img.shape == (16, 16, 3) and tuple(img[0, 0]) == (255, 255, 255)
    assert np.abs(img[8, 8].astype(int) - _colour(code)).max() <= 2
    assert code in train
    assert json.loads(sample["json"])["caption"] == sample["txt"].decode()


def names_in(captions: list[str], names: dict[str, str]) -> bool:
    return all(any(n in cap for n in names.values()) for cap in captions)


def test_split_is_the_same_for_every_style_and_unseen_concepts_never_train(node_modules: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "emoji"
    build_emoji_dataset(out, packages=node_modules, image_size=16)
    styles = ("google", "twitter", "openmoji")
    train_codes = {s: _codes(_keys(out / "train" / s / "00000.tar")) for s in styles}
    unseen = UNSEEN
    assert ONLY_OPENMOJI in TRAIN and CORRUPT in TRAIN
    assert train_codes["openmoji"] == train_codes["twitter"] | {ONLY_OPENMOJI} == TRAIN
    assert train_codes["google"] == train_codes["twitter"] - {CORRUPT}
    everything = train_codes["openmoji"] | _codes(_keys(out / "train" / "all" / "00000.tar"))
    assert not everything & unseen
    for style in styles:
        evaluated = _codes(_keys(out / "eval" / f"emoji_{style}_retrieval" / "test" / "0.tar"))
        assert evaluated and evaluated <= unseen
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    split_of = {}
    for row in rows:
        assert split_of.setdefault(row["hexcode"], row["split"]) == row["split"]  # one split per concept
        tar = out / row["file"]
        assert row["key"] in _keys(tar)
    assert {r["hexcode"] for r in rows if r["split"] == "unseen"} == unseen


def test_same_packages_give_identical_bytes_in_another_process(node_modules: Path, tmp_path: Path) -> None:
    """Python's hash() is salted per process: a split or order built on it would differ here."""
    build_emoji_dataset(tmp_path / "a", packages=node_modules, image_size=16)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    code = ("import sys; from clipscale.cli import main; sys.exit(main(sys.argv[1:]))")
    subprocess.run([sys.executable, "-c", code, "data", "emoji", "--out", str(tmp_path / "b"),
                    "--packages", str(node_modules), "--image-size", "16"], check=True, env=env,
                   capture_output=True, timeout=120)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and a == b


def test_skin_tones_dropped_bad_images_counted_and_licences_written(
        node_modules: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "emoji"
    assert main(["data", "emoji", "--out", str(out), "--packages", str(node_modules),
                 "--image-size", "16"]) == 0
    said = capsys.readouterr().out
    assert "concepts" in said and " held out) to " in said and "unseen" not in said  # the README's words
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skin_tones"] == "dropped"
    assert meta["packages"] == PINS
    assert meta["skipped"]["google"]["unreadable"] == 1 and meta["skipped"]["twitter"]["unreadable"] == 0
    assert all(meta["skipped"][s]["skin_tone_dropped"] == 1 for s in ("google", "twitter", "openmoji"))
    assert meta["skipped"]["openmoji"]["unmatched"] == 1
    assert meta["missing_concepts"] == {"google": 2, "twitter": 1, "openmoji": 0}
    assert meta["concepts"]["total"] == len(CONCEPTS) + 1
    all_keys = [k for t in (out / "train").rglob("*.tar") for k in _keys(t)]
    assert not [k for k in all_keys if SKIN in k]
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert {"style", "concept", "caption", "group", "subgroup", "split", "file", "key"} <= set(rows[0])
    assert {r["group"] for r in rows} == {"smileys-emotion", "people-body"}
    attribution = (out / "LICENSES" / "ATTRIBUTION").read_text()
    for words in ("Apache-2.0", "CC-BY-4.0", "CC-BY-SA-4.0", "Schwäbisch Gmünd", "emojibase-data@17.0.0",
                  "MIT", "Twitter"):
        assert words in attribution
    assert (out / "LICENSES" / "openmoji.LICENSE.txt").read_text() == "licence text of openmoji\n"
    assert (out / "LICENSES" / "emojibase-data.LICENSE").is_file()


def test_styles_subset_needs_only_its_packages(node_modules: Path, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(node_modules / "openmoji")
    shutil.rmtree(node_modules / "emoji-datasource-google")
    out = tmp_path / "emoji"
    meta = build_emoji_dataset(out, packages=node_modules, styles="twitter", image_size=16)
    assert meta["styles"] == ["twitter"] and sorted(p.name for p in (out / "train").iterdir()) == ["twitter"]
    assert "openmoji" not in (out / "emoji_suite.toml").read_text()
    assert "OpenMoji" not in (out / "LICENSES" / "ATTRIBUTION").read_text()


# ---- errors: one line, exit 2 ---------------------------------------------------------------------


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["data", "emoji", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clipscale: error: ") and "\n" not in err
    return err


def test_errors_are_one_line(node_modules: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "o")]
    err = _one_line_error([*out, "--packages", str(tmp_path / "nowhere")], capsys)
    assert "nowhere" in err and "emojibase-data@17.0.0" in err
    err = _one_line_error([*out, "--styles", "google,apple"], capsys)
    assert "'apple'" in err and "google, twitter, openmoji" in err
    err = _one_line_error([*out, "--packages", str(node_modules), "--image-size", "0"], capsys)
    assert "image_size" in err
    (node_modules / "openmoji" / "package.json").write_text(json.dumps({"version": "16.0.0"}))
    err = _one_line_error([*out, "--packages", str(node_modules)], capsys)
    assert "openmoji" in err and "17.0.0" in err and "'16.0.0'" in err
    (node_modules / "openmoji" / "package.json").write_text(json.dumps({"name": "openmoji"}))
    err = _one_line_error([*out, "--packages", str(node_modules)], capsys)
    assert "openmoji" in err and "17.0.0" in err
    import shutil

    shutil.rmtree(node_modules / "emoji-datasource-twitter" / "img")
    err = _one_line_error([*out, "--packages", str(node_modules), "--styles", "twitter"], capsys)
    assert "emoji-datasource-twitter" in err and "no twitter image" in err
    shutil.rmtree(node_modules / "emoji-datasource-twitter")
    err = _one_line_error([*out, "--packages", str(node_modules), "--styles", "twitter"], capsys)
    assert "emoji-datasource-twitter" in err and "16.0.0" in err
    assert not (tmp_path / "o").exists()


def test_without_npm_and_packages_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    err = _one_line_error(["--out", str(tmp_path / "o")], capsys)
    assert "npm" in err and "--packages" in err and "openmoji@17.0.0" in err


# ---- npm install into the cache -------------------------------------------------------------------

FAKE_NPM = """#!{python}
import shutil, sys
from pathlib import Path
with open({log!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if {fail}:
    sys.stderr.write("npm ERR! code E404\\nnpm ERR! 404 Not Found\\n")
    sys.exit(1)
prefix = Path(sys.argv[sys.argv.index("--prefix") + 1])
shutil.copytree({tree!r}, prefix / "node_modules")
"""


def _fake_npm(bin_dir: Path, tree: Path, log: Path, *, fail: bool) -> None:
    bin_dir.mkdir(exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM.format(python=sys.executable, log=str(log), tree=str(tree), fail=fail))
    npm.chmod(0o755)


def test_npm_installs_the_pins_into_the_cache_once(node_modules: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "npm.log"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    _fake_npm(tmp_path / "bin", node_modules, log, fail=True)
    with pytest.raises(ClipscaleError, match=r"npm install .* failed \(exit 1: npm ERR! 404 Not Found\)"):
        build_emoji_dataset(tmp_path / "x", image_size=16)
    assert not cache_dir().exists() and not [p for p in cache_dir().parent.iterdir() if ".tmp-" in p.name]
    log.unlink()
    _fake_npm(tmp_path / "bin", node_modules, log, fail=False)
    first = build_emoji_dataset(tmp_path / "a", image_size=16)
    second = build_emoji_dataset(tmp_path / "b", image_size=16)  # reuses the cache: npm not run again
    calls = log.read_text().splitlines()
    assert len(calls) == 1
    args = calls[0].split()
    assert args[0] == "install" and "--ignore-scripts" in args
    assert {a for a in args if "@" in a} == {f"{n}@{v}" for n, v in PINS.items()}
    assert cache_dir().parent == tmp_path / "cache" / "clipscale" / "npm"
    assert (cache_dir() / "node_modules" / "openmoji" / "package.json").is_file()
    assert first == second and _files(tmp_path / "a") == _files(tmp_path / "b")


def test_help_names_the_pinned_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "emoji", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"{name}@{version}" in text.replace("- ", "-") for name, version in PINS.items())
