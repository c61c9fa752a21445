"""CPU training throughput: `clipscale train` vs `open_clip_train` on the same model, shards, batch,
threads and workers, one process each, run one after the other (alternating) by this script.

Fairness: open_clip_train tokenises with BPE, so both train the same open_clip config with a BPE
text tower (`<rung>-bpe`: the ladder rung's towers with vocab 49,408 and a 32-token context),
registered in each process with open_clip.add_model_config. clipscale's own ladder model (word
tokenizer) is reported as an extra row. Steady-state samples/s = median over log intervals after
the first (clipscale: metrics.jsonl samples_per_s; open_clip_train: batch / "Batch (t)" average).

    .venv/bin/python bench/bench_train_cpu.py [--samples 12800 --batch 128 --threads 2 --workers 1]

Needs bench/.venv-openclip (open_clip_torch[training]: it pins webdataset <= 0.2.86):
    python3 -m venv bench/.venv-openclip
    bench/.venv-openclip/bin/pip install torch==2.14.1 torchvision==0.29.1 "open_clip_torch[training]==3.3.0"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPENCLIP_PY = ROOT / "bench" / ".venv-openclip" / "bin" / "python"

CLIPSCALE_SNIPPET = """
import json, sys
import open_clip
open_clip.add_model_config(sys.argv[1])
from clipscale.train import load_train_config, train
train(load_train_config(None, json.loads(sys.argv[2])))
"""

OPENCLIP_SNIPPET = """
import sys
import open_clip
open_clip.add_model_config(sys.argv[1])
from open_clip_train.main import main
main(sys.argv[2:])
"""


def bpe_config(rung: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from clipscale.models import ladder_config

    cfg = ladder_config(rung)
    cfg["text_cfg"]["vocab_size"] = 49408
    return cfg


def ensure_shards(out: Path, samples: int) -> Path:
    shards = out / "shards"
    if not (shards / "meta.json").exists():
        from clipscale.data.synth import write_train_shards

        write_train_shards(shards, samples=samples, seed=0, image_size=32, shard_size=10_000)
    return shards


def env_for(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": str(ROOT)}


def run_clipscale(a: argparse.Namespace, model: str, cfg_path: Path, shards: Path, out: Path) -> dict:
    run_dir = out / f"clipscale-{model}"
    overrides = {"model": model, "train_data": str(shards), "output_dir": str(run_dir), "resume": "none",
                 "samples_seen": a.samples, "batch_size": a.batch, "lr": 1e-3, "warmup": a.batch * 10,
                 "threads": a.threads, "workers": a.workers, "log_every": 10, "checkpoint_points": [1.0],
                 "progress": False, "seed": 0}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLIPSCALE_SNIPPET, str(cfg_path), json.dumps(overrides)],
                   env=env_for(a.threads), check=True, cwd=ROOT)
    wall = time.perf_counter() - t
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["samples_per_s"] for line in lines]
    return {"tool": "clipscale train", "model": model, "samples_per_s": statistics.median(rates[1:]),
            "intervals": len(rates) - 1, "wall_s": wall}


def run_open_clip(a: argparse.Namespace, model: str, cfg_path: Path, shards: Path, out: Path) -> dict:
    n_shards = len(list(shards.glob("*.tar")))
    argv = ["--model", model, "--train-data", f"{shards}/{{00000..{n_shards - 1:05d}}}.tar",
            "--dataset-type", "webdataset", "--train-num-samples", str(a.samples),
            "--batch-size", str(a.batch), "--epochs", "1", "--lr", "1e-3", "--wd", "0.2",
            "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6",
            "--warmup", "10", "--precision", "fp32", "--workers", str(a.workers), "--seed", "0",
            "--save-frequency", "0", "--log-every-n-steps", "10", "--report-to", "",
            "--logs", str(out / "open_clip_logs"), "--name", f"bench-{int(time.time())}"]
    t = time.perf_counter()
    proc = subprocess.run([str(OPENCLIP_PY), "-c", OPENCLIP_SNIPPET, str(cfg_path), *argv],
                          env=env_for(a.threads), capture_output=True, text=True, cwd=out)
    wall = time.perf_counter() - t
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"open_clip_train failed:\n{log[-3000:]}")
    times = [float(x) for x in re.findall(r"Batch \(t\): ([0-9.]+)", log)]
    rates = [a.batch / x for x in times if x > 0]
    return {"tool": "open_clip_train", "model": model, "samples_per_s": statistics.median(rates[1:]),
            "intervals": len(rates) - 1, "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=12800)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--rung", default="tiny-S1")
    p.add_argument("--repeats", type=int, default=2, help="alternating A/B rounds")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "train_cpu")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    shards = ensure_shards(a.out, max(20_000, a.samples))
    model = f"{a.rung}-bpe"
    cfg_path = a.out / f"{model}.json"
    cfg_path.write_text(json.dumps(bpe_config(a.rung)))
    rows = []
    for _ in range(a.repeats):
        rows.append(run_clipscale(a, model, cfg_path, shards, a.out))
        rows.append(run_open_clip(a, model, cfg_path, shards, a.out))
    rows.append(run_clipscale(a, a.rung, cfg_path, shards, a.out))
    ours = statistics.median(r["samples_per_s"] for r in rows if r["tool"] == "clipscale train"
                             and r["model"] == model)
    theirs = statistics.median(r["samples_per_s"] for r in rows if r["tool"] == "open_clip_train")
    result = {"args": {k: str(v) for k, v in vars(a).items()}, "load_avg": os.getloadavg(), "rows": rows,
              "ratio_same_model": ours / theirs}
    (a.out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"load average {os.getloadavg()}")
    for r in rows:
        print(f"{r['tool']:16s} {r['model']:14s} {r['samples_per_s']:8.0f} samples/s  "
              f"wall {r['wall_s']:6.1f} s")
    print(f"ratio clipscale / open_clip_train ({model}): {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
