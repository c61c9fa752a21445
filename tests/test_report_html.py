"""The report: one self-contained HTML file that parses, embeds its figures and points nowhere else."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from unittest import mock

import pytest

from clipscale.study.pipeline import finish_study
from clipscale.study.runner import run_study
from clipscale.study.spec import load_study
from tests.study_fakes import FAKE_HOOKS, fake_flops

STUDY = """
[study]
name = "r"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 4000

[datasets.zipf]
synth = "zipf"
samples = 4000

[train]
batch_size = 200
checkpoint_points = [0.5, 1.0]

[fit]
laws = ["frontier", "power"]
bootstrap = 20

[[grid]]
model = ["tiny-S0", "tiny-S1", "tiny-S2"]
dataset = ["uni", "zipf"]
data_size = 4000
compute = [4.0, 12.0]

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 200
samples_seen = 8000
"""


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("report")
    (root / "study.toml").write_text(STUDY)
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        study = load_study(root / "study.toml")
        run_study(study, hooks=FAKE_HOOKS, log=lambda s: None)
        return finish_study(study, log=lambda s: None)["report"], study


def test_report_is_self_contained_html_with_embedded_figures(report) -> None:
    path, study = report
    assert path == study.output_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    parsed = _Collector()
    parsed.feed(text)
    parsed.close()
    images = [v for tag, k, v in parsed.attrs if tag == "img" and k == "src"]
    # grid + learning curves + one scaling figure and one isoFLOP figure for the one target
    isoflop = importlib.util.find_spec("clipscale.fit.analyses.isoflop") is not None  # helper 12a's module
    assert len(images) == (4 if isoflop else 3)
    assert isoflop or "isoFLOP analysis unavailable: " in text
    if isoflop:  # the fake metric depends on compute only: no budget has its optimum inside the ladder
        assert ("synth_retrieval/image_retrieval_recall@5/uniform: C=4: edge, C=12: edge -&gt; no exponent: "
                "0 of 2 compute budgets have an interior optimum") in text  # the words `clipscale run` prints
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    links = [v for _, k, v in parsed.attrs if k in ("src", "href")]
    assert not [v for v in links if not v.startswith("data:")]  # nothing outside the file
    assert "http://" not in text and "https://" not in text
    assert {"table", "h2", "img"} <= set(parsed.tags)
    for expected in ("The grid", "Learning curves", "Error vs compute", "Predictions for larger budgets",
                     "isoFLOP analysis: compute-optimal model size", "Every number", "tiny-S2"):
        assert expected in text


def test_report_numbers_match_fits_json(report) -> None:
    path, study = report
    fits = json.loads((study.output_dir / "fits.json").read_text())
    frontier = next(f for f in fits["fits"] if f["law"] == "frontier" and f["distribution"] == "uniform")
    # the fake metric is exactly 1 - 0.9 C^-0.2: the power law over all points recovers it
    power = next(f for f in fits["fits"] if f["law"] == "power" and f["distribution"] == "uniform")
    assert power["params"]["alpha"] == pytest.approx(-0.2, abs=1e-6)
    assert power["params"]["A"] == pytest.approx(0.9, rel=1e-5)
    if frontier["dof"].get("warning"):  # the cherti frontier's few points: no CI as a number (issue 20)
        assert frontier["ci"] == {} and frontier["ci_unavailable"]
    else:
        lo, hi = frontier["ci"]["alpha"]
        assert lo <= frontier["params"]["alpha"] <= hi
    assert len(frontier["predictions"]) == 2
    text = path.read_text()
    assert f"{frontier['params']['alpha']:.3f}" in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium package is not installed")
def test_report_renders_in_headless_chromium(report, tmp_path: Path) -> None:
    path, _ = report
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,2000", f"--screenshot={shot}", path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page: text and figures were drawn


def test_a_fit_to_points_whose_error_does_not_vary_says_so_instead_of_r2_nan() -> None:
    from clipscale.fit import fit_law
    from clipscale.report.analysis import describe_fit

    meta = {"dataset": "synth", "metric": "acc1", "distribution": "uniform", "group": "uniform"}
    flat = fit_law("power", y=[0.9, 0.9, 0.9], C=[1.0, 10.0, 100.0]).to_dict()  # chance level at every size
    saved = json.loads(json.dumps(flat).replace("NaN", "null"))  # as fits.json stores it
    for f in (flat, saved):
        text = describe_fit({**f, **meta})
        assert "R² log n/a: the points' E do not vary" in text and "nan" not in text


def test_report_names_the_frontier_each_law_used_and_report_prints_the_demo_summary(report) -> None:
    path, study = report
    text = path.read_text(encoding="utf-8")
    # [fit] frontier is "none", but law frontier is fitted on the cherti frontier: the page says so
    assert "Frontier: cherti (frontier law); none (power law)." in text
    lines: list[str] = []
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        finish_study(study, report=False, log=lines.append)  # what `clipscale run` / `report` print
    assert any(line.startswith("isoFLOP analysis (") for line in lines), lines
    assert any(line.startswith("data-constrained runs vs their distribution's law") for line in lines)
