"""`clipscale demo`: the built-in study (demo.toml) end to end — data, training, evaluation, fits, report.

It is an ordinary study: rerunning it skips what is done, and `clipscale status/results/report` work on
it with `clipscale-demo`'s copy of the study file. At the end it prints the fitted laws and checks the
four phenomena the paper shows, so a reader sees at once whether tiny scale reproduced them.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from clipscale.study.spec import StudySpec, load_study

DEMO_FILES = ("demo.toml", "demo_suite.toml")


def install_demo(out: str | Path) -> Path:
    """Copy the demo study (and its eval suite) into `out`, so the user can inspect and rerun it."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in DEMO_FILES:
        text = resources.files("clipscale.study").joinpath(name).read_text(encoding="utf-8")
        target = out / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    return out / "demo.toml"


def demo_study(out: str | Path) -> StudySpec:
    return load_study(install_demo(out))


def _off_frontier(fits: list[dict[str, Any]], df: Any) -> list[str]:
    """How far each data-constrained run's error sits above its distribution's frontier law."""
    from clipscale.report.analysis import final_points

    lines = []
    for f in fits:
        if "fit" not in f:
            continue
        pts = final_points(df, f["dataset"], f["metric"])
        cons = pts[pts.constrained & (pts.distribution == f["distribution"])]
        for _, row in cons.iterrows():
            ratio = row.error / float(f["fit"].predict(C=[row.compute])[0])
            lines.append(f"  {f['dataset']} [{f['distribution']}] {row.model} on {row.data_size} samples x"
                         f"{row.repeats:.0f}: error {row.error:.3f} = {ratio:.2f}x the frontier's")
    return lines


def summarize(study: StudySpec) -> list[str]:
    """The fitted laws and the phenomena checks, as printable lines."""
    import json

    from clipscale.report.analysis import describe_fit
    from clipscale.study.results import build_results_table

    fits_json = json.loads((study.output_dir / "fits.json").read_text(encoding="utf-8"))
    lines = ["fitted laws (error vs compute C in GMACs, on each distribution's frontier):"]
    lines += [f"  {describe_fit(f)}" for f in fits_json["fits"]]
    primary = study.fit.metrics[0]
    lines.append(f"compute-optimal model size per isoFLOP group ({primary}; N_opt in M params):")
    for o in (o for o in fits_json["compute_optimal"] if o["metric"] == primary):
        groups = ", ".join(f"C={g['compute']:.3g}: {g['best_model']} ({g['n_opt']:.3g})" for g in o["groups"])
        exp = f" -> N_opt ∝ C^{o['exponent']:.2f}" if "exponent" in o else ""
        lines.append(f"  {o['dataset']} [{o['distribution']}] {groups}{exp}")
    from clipscale.report import analysis

    df = build_results_table(study)
    dataset = next((d for d, m in analysis.targets(df, (primary,))), None)
    if dataset is not None:
        fits = analysis.fit_target(df, dataset=dataset, metric=primary, laws=("frontier",), bootstrap=0,
                                   predict_compute=())
        lines.append("data-constrained runs vs the frontier:")
        lines += _off_frontier(fits, df) or ["  (none)"]
    return lines


def run_demo(*, out: str | Path = "clipscale-demo", jobs: int | None = None) -> int:
    from clipscale.report import write_report
    from clipscale.study.results import write_results
    from clipscale.study.runner import run_study

    start = time.time()
    study = demo_study(out)
    print(f"clipscale demo: study {study.path} -> {study.output_dir}")
    outcome = run_study(study, jobs=jobs)
    table = write_results(study, fmt="csv")
    report = write_report(study)
    for line in summarize(study):
        print(line)
    print(f"results table: {table}")
    print(f"report: {report}")
    print(f"demo finished in {time.time() - start:.0f} s; `clipscale status {study.path}` lists every run")
    return 1 if outcome.get("failed") else 0
