"""`clipscale demo`: the built-in study (demo.toml) end to end — data, training, evaluation, fits, report.

`clipscale demo --real` runs demo_real.toml instead: the same stages on real captioned images (emoji in
three styles, `clipscale data emoji`), built into OUT/data first from the pinned npm packages.

It is an ordinary study: rerunning it skips what is done, and `clipscale status/results/report` work on
it with `clipscale-demo`'s copy of the study file. At the end (the same results → fits → report stage
as `clipscale run`) it prints the fitted laws, the isoFLOP analysis and the data-constrained runs, so a
reader sees at once whether tiny scale reproduced the paper's phenomena.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from clipscale.progress import Progress
from clipscale.study.spec import StudySpec, load_study

DEMO_FILES = ("demo.toml", "demo_suite.toml")
REAL_FILES = ("demo_real.toml",)  # its suite is written with the data (OUT/data/emoji_suite.toml)
REAL_DATA = "data"  # OUT/data: `clipscale data emoji` output, as demo_real.toml names it


def install_demo(out: str | Path, *, files: tuple[str, ...] = DEMO_FILES) -> Path:
    """Copy the demo study (and its eval suite) into `out`, so the user can inspect and rerun it."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in files:
        text = resources.files("clipscale.study").joinpath(name).read_text(encoding="utf-8")
        target = out / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    return out / files[0]


def demo_study(out: str | Path) -> StudySpec:
    return load_study(install_demo(out))


def real_demo_study(out: str | Path, *, packages: str | Path | None = None) -> StudySpec:
    """The real-data study in `out`, its data built first into OUT/data (kept: a rerun reuses it)."""
    from clipscale.data.emoji import build_emoji_dataset

    data = Path(out).resolve() / REAL_DATA
    if not (data / "meta.json").is_file():
        start = time.time()
        meta = build_emoji_dataset(data, packages=packages)
        print(f"clipscale demo --real: built {meta['concepts']['total']:,} emoji concepts in "
              f"{len(meta['styles'])} styles into {data} ({time.time() - start:.0f} s)")
    return load_study(install_demo(out, files=REAL_FILES))


def summarize(doc: dict[str, Any], *, primary: str) -> list[str]:
    """The fitted laws, the isoFLOP analysis and the data-constrained check of a fits.json document; when
    there is no law, why (the report says the same)."""
    from clipscale.report import analysis
    from clipscale.study.extrapolation import describe as describe_check

    head = "fitted laws (error vs compute C in GMACs, per training distribution):"
    if not doc["fits"]:
        lines = [f"fitted laws: {analysis.no_fits_text(doc)}"]
        lines += [f"  {analysis.describe_fit(f)}" for f in doc["failed"][1:]]  # the first is in the reason
    else:
        lines = [head, *(f"  {analysis.describe_fit(f)}" for f in doc["fits"] + doc["failed"])]
    lines += [f"  {line}" for line in map(describe_check, doc["fits"]) if line]
    if "left_out" in doc and doc["left_out"].get("of"):
        lines.append(f"  {analysis.left_out_text(doc['left_out'])}")
    lines += _comparisons(doc)
    iso = analysis.headline_isoflop(doc, primary)
    if iso:  # only grids with compute-matched groups have an isoFLOP analysis
        lines.append(f"isoFLOP analysis ({primary}; N_opt in M params; edge = minimum at the smallest or "
                     "largest size, excluded):")
    lines += [f"  {analysis.isoflop_line(o)}" for o in iso]
    if not doc["fits"]:
        return lines
    lines.append(f"data-constrained runs vs their distribution's law ({primary}; excluded from its fit):")
    first = doc["fits"][0]
    target = (first.get("dataset"), first.get("metric"))
    lines += [f"  {r['group']}: {r['model']} on {r['data_size']} samples x{r['repeats']:.0f}: error "
              f"{r['error']:.3f} = {r['ratio']:.2f}x the law's" for r in doc["off_law"]
              if (r.get("dataset"), r.get("metric")) == target] or ["  (none)"]
    return lines


def _comparisons(doc: dict[str, Any]) -> list[str]:
    """The headline target's distributions compared across compute (`clipscale compare`): the predicted
    error difference at the largest compute measured, with its CI."""
    if not doc["fits"] or not doc.get("comparisons"):
        return []
    head = doc["fits"][0]
    lines = [f"distributions compared ({head['dataset']}, {head['law']} law; E[a] - E[b] at the largest C "
             "measured, 95% CI):"]
    for p in doc["comparisons"]:
        if (p.get("dataset"), p.get("law")) != (head["dataset"], head["law"]) or not p["at"]:
            continue
        (a, b), r = p["groups"], p["at"][0]
        ci = f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" if r["ci"] else "n/a"
        verdict = (f"{a if r['difference'] < 0 else b} lower" if r["excludes_zero"]
                   else "no clear difference: the CI includes 0")
        lines.append(f"  {a} vs {b} at C={r['C']:.3g}: {r['difference']:+.3f} {ci}: {verdict}")
    return lines


def run_demo(*, out: str | Path = "clipscale-demo", jobs: int | None = None, real: bool = False,
             packages: str | Path | None = None) -> int:
    """The demo with its text output; returns the exit status."""
    doc = demo(out=out, jobs=jobs, real=real, packages=packages)
    print_demo(doc)
    return doc["exit_status"]


def demo(*, out: str | Path = "clipscale-demo", jobs: int | None = None, real: bool = False,
         packages: str | Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the demo study; returns what `clipscale demo` reports (text or --json) and its exit status.
    `progress` gets the fitting stage's lines (clipscale.progress)."""
    from clipscale.study.pipeline import finish_study
    from clipscale.study.runner import run_study

    start = time.time()
    study = real_demo_study(out, packages=packages) if real else demo_study(out)
    print(f"clipscale demo: study {study.path} -> {study.output_dir}")
    outcome = run_study(study, jobs=jobs)
    done = finish_study(study, log=lambda s: None, progress=progress)
    counts = ("planned", "finished", "failed", "skipped", "locked", "interrupted", "pending", "running")
    doc: dict[str, Any] = {
        "study": str(study.path), "output_dir": str(study.output_dir),
        **{k: outcome.get(k) for k in counts},
        **{k: outcome.get(k) for k in ("signal", "failed_runs", "interrupted_runs", "unfinished_runs")},
        "complete": done["complete"], "missing": done["missing"],
        "again": f"clipscale demo{' --real' if real else ''} --out {out}"}
    if done["complete"]:
        doc["summary"] = summarize(done["doc"], primary=study.fit.metrics[0])
        doc.update({kind: str(done[kind]) for kind in ("results", "fits", "report")})
    doc["wall_time_s"] = time.time() - start
    doc["exit_status"] = 1 if not done["complete"] or outcome.get("failed") else 0
    return doc


def print_demo(doc: dict[str, Any]) -> None:
    """`clipscale demo`'s text output of a `demo()` result."""
    if not doc["complete"]:
        print(f"clipscale demo: {len(doc['missing'])} runs did not finish "
              f"(`clipscale status {doc['study']}`); rerun `{doc['again']}` to continue them")
        return
    for line in doc["summary"]:
        print(line)
    for kind in ("results", "fits", "report"):
        print(f"{kind}: {doc[kind]}")
    print(f"demo finished in {doc['wall_time_s']:.0f} s; `clipscale status {doc['study']}` lists every run")
