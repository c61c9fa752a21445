"""Bench: zero-shot classification + retrieval over the synthetic eval sets, clipscale vs CLIP_benchmark.

Same checkpoint, same data, same batch size, fp32 on CPU, in one script. Reports wall time of each
tool (end to end as a command, and in-process after imports) and the largest absolute difference
between their metrics (target: <= 1e-4).

The checkpoint is a ladder-shaped tiny CLIP (tiny-S1 towers) whose text tower uses open_clip's BPE
vocabulary and 77-token context, randomly initialised (seed 0): CLIP_benchmark tokenises with
`open_clip.get_tokenizer(model)`, which cannot reproduce the ladder's word tokenizer, and random
weights are enough for agreement and timing. Its open_clip config is registered in CLIP_benchmark's
process with `open_clip.add_model_config`, and the weights load through `--pretrained CKPT`.

Needs bench/.venv-clipbench (see /work/notes/bench_eval.md):
    python3 -m venv bench/.venv-clipbench
    bench/.venv-clipbench/bin/pip install torch==2.14.1 torchvision==0.29.1 open_clip_torch==3.3.0 \
        requests "numpy<2.4" clip_benchmark
Run: .venv/bin/python bench/bench_eval.py [--samples 1000] [--repeats 3] [--threads 1] [--out bench/out/eval]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIPBENCH_PY = REPO / "bench" / ".venv-clipbench" / "bin" / "python"
MODEL = "bench-tiny-bpe"
TASKS = ("synth_shape", "synth_color", "synth_count", "synth_relation", "synth_retrieval")

CLIPBENCH_DRIVER = r"""
import json, sys, time
t0 = time.perf_counter()
import open_clip
from clip_benchmark import cli
open_clip.add_model_config(sys.argv[1])
t1 = time.perf_counter()
for argv in json.loads(sys.argv[2]):
    sys.argv = ["clip_benchmark", "eval", *argv]
    cli.main()
print("BENCH", json.dumps({"import_s": t1 - t0, "eval_s": time.perf_counter() - t1}))
"""

CLIPSCALE_DRIVER = r"""
import json, sys, time
t0 = time.perf_counter()
import open_clip  # noqa: F401  (imported before timing, as for CLIP_benchmark)
from clipscale.evals import evaluate_checkpoint, load_suite
t1 = time.perf_counter()
records = evaluate_checkpoint(sys.argv[1], suite=load_suite("synth", root=sys.argv[2]),
                              batch_size=int(sys.argv[3]))
t2 = time.perf_counter()
print("BENCH", json.dumps({"import_s": t1 - t0, "eval_s": t2 - t1,
                           "metrics": {r["dataset"]: r["metrics"] for r in records}}))
"""


def make_inputs(out: Path, samples: int) -> tuple[Path, Path, Path]:
    """Eval sets, checkpoint and open_clip config (rebuilt only if missing)."""
    import torch

    from clipscale.data.synth import write_eval_sets
    from clipscale.models import ladder_config, save_checkpoint, write_open_clip_config
    from clipscale.models.tokenizer import OpenClipTokenizer

    sets, ckpt = out / f"sets-{samples}", out / "bench-tiny-bpe.pt"
    if not sets.exists():
        write_eval_sets(sets, seed=0, image_size=32, samples_per_task=samples, train_samples_per_task=0)
    cfg = ladder_config("tiny-S1")
    cfg["text_cfg"].update(vocab_size=49408, context_length=77)
    cfg_path = write_open_clip_config(out, MODEL, cfg)
    if not ckpt.exists():
        import open_clip

        torch.manual_seed(0)
        model = open_clip.model.CLIP(**cfg)
        save_checkpoint(ckpt, model=model, model_name=MODEL, model_config=cfg, step=0, samples_seen=0,
                        tokenizer=OpenClipTokenizer("ViT-B-32"), compute=0.0, gmacs=0.0)
    return sets, ckpt, cfg_path


def clipbench_argv(sets: Path, ckpt: Path, results: Path, batch: int, workers: int) -> list[list[str]]:
    common = ["--model", MODEL, "--pretrained", str(ckpt), "--dataset_root", f"{sets}/{{dataset}}",
              "--batch_size", str(batch), "--no_amp", "--num_workers", str(workers),
              "--output", f"{results}/{{dataset}}_{{task}}.json"]
    classification = [f"wds/{t}" for t in TASKS if t != "synth_retrieval"]
    return [["--dataset", *classification, "--task", "zeroshot_classification", *common],
            ["--dataset", "wds/synth_retrieval", "--task", "zeroshot_retrieval", "--recall_k", "1", "5", "10",
             *common]]


def timed(cmd: list[str], threads: int) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd[:3])} ...\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BENCH "))
    return wall, json.loads(line[6:])


def compare(ours: dict[str, dict], results: Path) -> float:
    worst = 0.0
    for task in TASKS:
        kind = "zeroshot_retrieval" if task == "synth_retrieval" else "zeroshot_classification"
        theirs = json.loads((results / f"{task}_{kind}.json").read_text())["metrics"]
        for key, value in ours[task].items():
            other = theirs[key]
            if value is None:
                assert other != other, (task, key, other)  # NaN on their side
                continue
            worst = max(worst, abs(value - other))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000, help="images per eval set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1,
                    help="CLIP_benchmark --num_workers; its default 4 fails on 1-shard wds sets (<= shards)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS for both tools (1: stable timings on a shared machine)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "eval")
    args = ap.parse_args()
    if not CLIPBENCH_PY.exists():
        sys.exit(f"{CLIPBENCH_PY} missing: create bench/.venv-clipbench (see this file's docstring)")
    args.out.mkdir(parents=True, exist_ok=True)
    sets, ckpt, cfg_path = make_inputs(args.out, args.samples)
    rows: dict[str, list] = {"clipscale": [], "clip_benchmark": []}
    for _ in range(args.repeats):
        results = args.out / "clipbench-results"
        shutil.rmtree(results, ignore_errors=True)
        results.mkdir()
        argv = json.dumps(clipbench_argv(sets, ckpt, results, args.batch_size, args.workers))
        rows["clip_benchmark"].append(timed([str(CLIPBENCH_PY), "-c", CLIPBENCH_DRIVER, str(cfg_path), argv],
                                            args.threads))
        rows["clipscale"].append(timed([sys.executable, "-c", CLIPSCALE_DRIVER, str(ckpt), str(sets),
                                        str(args.batch_size)], args.threads))
    worst = compare(rows["clipscale"][-1][1]["metrics"], args.out / "clipbench-results")
    summary = {name: {"wall_s": statistics.median(w for w, _ in r),
                      "eval_s": statistics.median(d["eval_s"] for _, d in r)} for name, r in rows.items()}
    summary["speedup_eval"] = summary["clip_benchmark"]["eval_s"] / summary["clipscale"]["eval_s"]
    summary["speedup_wall"] = summary["clip_benchmark"]["wall_s"] / summary["clipscale"]["wall_s"]
    summary.update(max_abs_metric_diff=worst, samples_per_set=args.samples, repeats=args.repeats,
                   batch_size=args.batch_size, clipbench_workers=args.workers, threads=args.threads,
                   loadavg=os.getloadavg())
    print(json.dumps(summary, indent=2))
    print(json.dumps(rows["clipscale"][-1][1]["metrics"], indent=1))


if __name__ == "__main__":
    main()
