"""Time `clipscale demo` end to end and screenshot its report in headless Chromium.

    .venv/bin/python bench/bench_demo.py --out /tmp/clipscale-demo [--jobs N] [--fresh]

Prints one JSON object: wall time, CPU time of the demo process tree (user + sys, which stays
meaningful when other work shares the cores), load averages before and after, the fitted laws
(fits.json) and where the screenshot is. Load averages matter: on a shared 2-core machine the wall
time of the same demo varies several-fold with what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def screenshot(report: Path, png: Path) -> bool:
    """Render the report in headless Chromium (Debian's `chromium`); False when it is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return False
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,4200", f"--screenshot={png}", report.as_uri()],
                   check=True, capture_output=True, timeout=180)
    return png.exists()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/clipscale-demo-bench")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--fresh", action="store_true", help="delete --out first (a cold run)")
    args = parser.parse_args()
    out = Path(args.out)
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "clipscale.cli", "demo", "--out", str(out)]
    if args.jobs:
        cmd += ["--jobs", str(args.jobs)]
    load_before = os.getloadavg()
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    png = out / "report_screenshot.png"
    shot = (out / "report.html").exists() and screenshot(out / "report.html", png)
    fits = json.loads((out / "fits.json").read_text()) if (out / "fits.json").exists() else None
    print(proc.stdout[-6000:])
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
    print(json.dumps({
        "command": " ".join(cmd), "returncode": proc.returncode, "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(), "cores": os.cpu_count(),
        "screenshot": str(png) if shot else None,
        "fits": [{k: f.get(k) for k in ("dataset", "metric", "distribution", "law", "params", "ci", "r2_log",
                                         "n_points", "error")} for f in (fits or {}).get("fits", [])],
        "isoflop": [{k: o.get(k) for k in ("dataset", "metric", "distribution", "a", "a_ci", "error")}
                    for o in (fits or {}).get("isoflop", [])],
    }, indent=1))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
