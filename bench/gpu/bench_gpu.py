"""GPU benchmark in one device call: clipscale train vs open_clip_train, and clipscale eval vs
CLIP_benchmark, on the same synthetic 224 px shards, batch and precision (bf16 autocast).

Per (model, tool, torch.compile or not) one training process runs until it has logged for
`--seconds` (then SIGTERM; clipscale checkpoints and exits on it). Steady-state samples/s is the
median over log intervals after the first `--skip` (start-up, compilation). MFU = 6 x forward
GMACs per sample (clipscale's FLOPs count, the paper's unit) x samples/s / the device's dense bf16
peak (clipscale.train.metrics: H200 989 TFLOP/s). Runs go in priority order (ViT-B/16 eager and
compiled, the eval, ViT-B/32) and are skipped, with the reason recorded, when `--budget-s` runs out.
Results: OUT/gpu_bench.json, rewritten after every run, so a killed call still returns them.

    bash bench/gpu/run.sh                                      # on the device (see README.md)
    .venv/bin/python bench/gpu/bench_gpu.py --smoke --out /tmp/gpu-smoke   # CPU, tiny, minutes
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "gpu")]
from bench_eval import TASKS, compare  # noqa: E402  (stdlib-only modules beside this one)
from snippets import EVAL_CLIP_BENCHMARK, EVAL_CLIPSCALE, TRAIN_CLIPSCALE, TRAIN_OPEN_CLIP  # noqa: E402

BATCH = {"ViT-B-16": 512, "ViT-B-32": 1024}  # per GPU, the same for both tools; B/16 (the target) first
SMOKE_MODEL = "bench-tiny-224"  # registered in every process from OUT/work/bench-tiny-224.json
SMOKE_CONFIG = {"embed_dim": 64,
                "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32,
                               "head_width": 32},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}

# ------------------------------------------------------------------ data


def _shard(args: tuple[Path, int, int, int, int]) -> None:
    """One tar of JPEG q90 images (smooth random colour fields: realistic decode cost, not zeros)
    with captions of random words of the synthetic vocabulary."""
    import numpy as np
    from PIL import Image

    from clipscale.data.synth.vocab import VOCABULARY

    path, first, count, size, seed = args
    rng = np.random.default_rng(seed)
    words = list(VOCABULARY)
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + count):
            coarse = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
            img = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            caption = "a photo of " + " ".join(rng.choice(words, rng.integers(4, 12)))
            for ext, data in (("jpg", buf.getvalue()), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def write_shards(out: Path, *, samples: int, size: int, shard_size: int, procs: int) -> str:
    """`samples` captioned images in shards of `shard_size`; returns the brace spec of the shards."""
    out.mkdir(parents=True, exist_ok=True)
    n = -(-samples // shard_size)
    jobs = [(out / f"{k:05d}.tar", k * shard_size, min(shard_size, samples - k * shard_size), size, k)
            for k in range(n)]
    with Pool(procs) as pool:
        pool.map(_shard, jobs)
    return f"{out}/{{00000..{n - 1:05d}}}.tar"


# ------------------------------------------------------------------ training runs


def _env(extra_path: str = "") -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), extra_path, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def clipscale_cmd(a: argparse.Namespace, model: str, cfg: str, spec: str, run_dir: Path, compile_: bool,
                  *, point_at_start: bool) -> list[str]:
    batch = a.batch[model]
    overrides = {"model": model, "train_data": spec, "output_dir": str(run_dir), "resume": "none",
                 "samples_seen": 10**9, "batch_size": batch, "lr": 5e-4, "warmup": 10 * batch,
                 "precision": a.precision, "compile": compile_, "workers": a.workers,
                 "log_every": a.log_every,
                 "checkpoint_points": [1e-9, 1.0] if point_at_start else [1.0], "progress": False,
                 "device": a.device, "seed": 0}
    return [sys.executable, "-c", TRAIN_CLIPSCALE, cfg, json.dumps(overrides)]


def open_clip_cmd(a: argparse.Namespace, model: str, cfg: str, spec: str, logs: Path, compile_: bool
                  ) -> list[str]:
    precision = {"bf16": "amp_bf16", "fp32": "fp32"}[a.precision]
    argv = ["--model", model, "--train-data", spec, "--dataset-type", "webdataset", "--dataset-resampled",
            "--train-num-samples", str(10**9), "--batch-size", str(a.batch[model]), "--epochs", "1",
            "--lr", "5e-4", "--wd", "0.2", "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6",
            "--warmup", "10", "--precision", precision, "--workers", str(a.workers), "--seed", "0",
            "--save-frequency", "0", "--log-every-n-steps", str(a.log_every), "--report-to", "",
            "--local-loss", "--gather-with-grad", "--logs", str(logs), "--name", f"run-{time.time_ns()}"]
    return [sys.executable, "-c", TRAIN_OPEN_CLIP, cfg, *argv, *(["--torchcompile"] if compile_ else [])]


def _rates_clipscale(run_dir: Path) -> tuple[list[float], list[float]]:
    path = run_dir / "metrics.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [r["samples_per_s"] for r in records], [r["data_wait_frac"] for r in records]


def _rates_open_clip(log: str, batch: int) -> list[float]:
    return [batch / float(t) for t in re.findall(r"Batch \(t\): ([0-9.]+)", log) if float(t) > 0]


def timed_run(cmd: list[str], *, log_path: Path, rates: Any, measure_s: float, max_s: float) -> dict:
    """Run until `rates()` has values for `measure_s` seconds (or `max_s` in all), then SIGTERM."""
    t0, first = time.monotonic(), None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=log_path.parent)
        while proc.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            if first is None and rates():
                first = now
            if (first is not None and now - first >= measure_s) or now - t0 >= max_s:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    text = log_path.read_text(errors="replace")
    return {"returncode": proc.returncode, "wall_s": round(time.monotonic() - t0, 1),
            "first_log_s": None if first is None else round(first - t0, 1), "log_tail": text[-1500:]}


def steady(values: list[float], skip: int) -> float | None:
    kept = values[skip:]
    return statistics.median(kept) if kept else None


# ------------------------------------------------------------------ evaluation


def eval_timing(a: argparse.Namespace, ckpt: Path, work: Path, model: str, cfg: str) -> dict:
    from clipscale.data.synth import write_eval_sets

    sets = work / "eval-sets"
    if not sets.exists():
        write_eval_sets(sets, seed=0, image_size=64, samples_per_task=a.eval_samples,
                        train_samples_per_task=0)
    out: dict[str, Any] = {"checkpoint": ckpt.name, "model": model, "images_per_set": a.eval_samples,
                           "batch_size": a.eval_batch, "precision": "fp32 (both)", "rounds": []}
    for _ in range(a.eval_repeats):
        results = work / f"clipbench-{time.time_ns()}"
        results.mkdir()
        common = ["--model", model, "--pretrained", str(ckpt), "--dataset_root", f"{sets}/{{dataset}}",
                  "--batch_size", str(a.eval_batch), "--no_amp", "--num_workers", "1",
                  "--output", f"{results}/{{dataset}}_{{task}}.json"]  # it picks cuda when present
        argv = [["--dataset", *[f"wds/{t}" for t in TASKS if t != "synth_retrieval"],
                 "--task", "zeroshot_classification", *common],
                ["--dataset", "wds/synth_retrieval", "--task", "zeroshot_retrieval",
                 "--recall_k", "1", "5", "10", *common]]
        theirs = _bench_process([sys.executable, "-c", EVAL_CLIP_BENCHMARK, json.dumps(argv), cfg])
        ours = _bench_process([sys.executable, "-c", EVAL_CLIPSCALE, str(ckpt), str(sets), a.device,
                               str(a.eval_batch)])
        diff = compare(ours.pop("metrics"), results)
        out["rounds"].append({"clipscale": ours, "clip_benchmark": theirs, "max_abs_metric_diff": diff})
    last = out["rounds"][-1]
    out["speedup_eval"] = last["clip_benchmark"]["eval_s"] / last["clipscale"]["eval_s"]
    out["speedup_wall"] = last["clip_benchmark"]["wall_s"] / last["clipscale"]["wall_s"]
    return out


def _bench_process(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[2][:40]!r}... exited {proc.returncode}: {proc.stderr[-1500:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BENCH "))
    return {**json.loads(line[6:]), "wall_s": wall}


# ------------------------------------------------------------------ driver


def environment(a: argparse.Namespace) -> dict:
    import torch

    from clipscale.train.metrics import peak_tflops

    info: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0], "device": a.device,
                            "cpus": os.cpu_count()}
    for name in ("open_clip", "webdataset", "clip_benchmark"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "present")
        except ImportError as exc:
            info[name] = f"missing: {exc}"
    if a.device == "cuda":
        dev = torch.device("cuda", 0)
        info.update(gpu=torch.cuda.get_device_name(dev), peak_bf16_tflops=peak_tflops(dev, a.peak_tflops))
    else:
        info["peak_bf16_tflops"] = a.peak_tflops
    return info


def plan(a: argparse.Namespace) -> list[tuple[str, str, bool]]:
    """(model, tool, compile) in priority order: the first model (ViT-B/16, the MFU target) eager and
    compiled, the eval on its eager checkpoint, then the other models; "eval" marks the eval."""
    runs: list[tuple[str, str, bool]] = []
    for i, model in enumerate(a.models):
        for compile_ in a.compile_modes:
            runs += [(model, "clipscale", compile_), (model, "open_clip_train", compile_)]
        if i == 0 and False in a.compile_modes:
            runs.append((model, "eval", False))
    return runs


def record_run(a: argparse.Namespace, result: dict, model: str, tool: str, compile_: bool, gmacs: float,
               peak: float | None, work: Path, cfg: str, spec: str) -> None:
    key = f"{model}|{tool}|{'compile' if compile_ else 'eager'}"
    tag = key.replace("|", "-")
    for stale in (work / tag, work / f"{tag}-logs"):  # a rerun must not read an earlier run's logs
        shutil.rmtree(stale, ignore_errors=True)
    if tool == "clipscale":
        run_dir = work / tag
        point = model == a.models[0] and not compile_  # the eval checkpoint: weights after step 1
        cmd = clipscale_cmd(a, model, cfg, spec, run_dir, compile_, point_at_start=point)
        out = timed_run(cmd, log_path=work / f"{tag}.log", rates=lambda: _rates_clipscale(run_dir)[0],
                        measure_s=a.seconds, max_s=a.seconds + a.startup_s)
        rates, waits = _rates_clipscale(run_dir)
        out["data_wait_frac"] = steady(waits, a.skip)
        if point:
            result["eval_checkpoint"] = str(min((run_dir / "checkpoints").glob("samples_*.pt"), default=""))
    else:
        logs = work / f"{tag}-logs"
        cmd = open_clip_cmd(a, model, cfg, spec, logs, compile_)
        log_path = work / f"{tag}.log"
        out = timed_run(cmd, log_path=log_path, rates=lambda: _rates_open_clip(
            log_path.read_text(errors="replace"), a.batch[model]), measure_s=a.seconds,
            max_s=a.seconds + a.startup_s)
        rates = _rates_open_clip(log_path.read_text(errors="replace"), a.batch[model])
    sps = steady(rates, a.skip)
    out.update(model=model, tool=tool, compile=compile_, batch=a.batch[model], intervals=len(rates),
               samples_per_s=sps, gmacs=gmacs,
               mfu=None if not (sps and peak) else 6e9 * gmacs * sps / (peak * 1e12))
    result["runs"][key] = out


def ratios(result: dict) -> dict[str, float]:
    out = {}
    for key, run in result["runs"].items():
        model, tool, mode = key.split("|")
        peer = result["runs"].get(f"{model}|open_clip_train|{mode}", {}).get("samples_per_s")
        if tool == "clipscale" and run.get("samples_per_s") and peer:
            out[f"{model}|{mode}"] = run["samples_per_s"] / peer
    return out


def save(out: Path, result: dict) -> None:
    result["ratio_clipscale_over_open_clip_train"] = ratios(result)
    tmp = out / "gpu_bench.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "gpu_bench.json")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=None, help="shards, run dirs, logs (default OUT/work)")
    p.add_argument("--smoke", action="store_true", help="CPU, one tiny 224 px model, seconds per run")
    p.add_argument("--seconds", type=float, default=25.0, help="measured seconds per training run")
    p.add_argument("--startup-s", type=float, default=150.0, help="most seconds before the first log")
    p.add_argument("--budget-s", type=float, default=540.0, help="skip runs that would end after this")
    p.add_argument("--samples", type=int, default=20_000, help="unique training samples (repeated)")
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--skip", type=int, default=2, help="log intervals dropped (start-up, compilation)")
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--eval-batch", type=int, default=512)
    p.add_argument("--eval-repeats", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--models", nargs="+", choices=tuple(BATCH), default=None, help="default: all, B/16 first")
    p.add_argument("--modes", nargs="+", choices=("eager", "compiled"), default=None,
                   help="default: eager then compiled (--smoke: eager)")
    a = p.parse_args()
    a.device, a.precision, a.compile_modes = "cuda", "bf16", [False, True]
    a.models = a.models or list(BATCH)
    a.batch = dict(BATCH)
    if a.smoke:
        a.device, a.precision, a.models, a.compile_modes = "cpu", "fp32", [SMOKE_MODEL], [False]
        a.batch = {SMOKE_MODEL: 8}
        a.seconds, a.startup_s, a.samples, a.workers, a.log_every, a.skip = 6, 90, 64, 1, 2, 1
        a.eval_samples, a.eval_batch, a.eval_repeats = 50, 50, 1
        a.peak_tflops = a.peak_tflops or 1.0  # a stand-in, so that the MFU arithmetic runs too
    if a.modes:
        a.compile_modes = [m == "compiled" for m in a.modes]
    return a


def main() -> None:
    a = parse_args()
    start = time.monotonic()
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.work or a.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    cfg = ""
    if a.smoke:
        cfg = str(work / f"{SMOKE_MODEL}.json")
        Path(cfg).write_text(json.dumps(SMOKE_CONFIG))
        import open_clip

        open_clip.add_model_config(cfg)
    result: dict[str, Any] = {"env": environment(a), "args": {k: str(v) for k, v in vars(a).items()},
                              "runs": {}, "skipped": []}
    t = time.monotonic()
    spec = write_shards(work / "shards", samples=a.samples, size=224, shard_size=max(8, a.samples // 32),
                        procs=max(1, (os.cpu_count() or 2) - 1))
    result["shards"] = {"samples": a.samples, "image_size": 224, "format": "jpg q90", "spec": spec,
                        "write_s": round(time.monotonic() - t, 1)}
    save(a.out, result)
    from clipscale.models.flops import count_flops

    gmacs = {m: float(count_flops(m).gmacs) for m in a.models}
    peak = result["env"]["peak_bf16_tflops"]
    for model, tool, compile_ in plan(a):
        need = 60.0 if tool == "eval" else a.seconds + (120.0 if compile_ else 45.0)
        left = a.budget_s - (time.monotonic() - start)
        if need > left:
            result["skipped"].append(f"{model}|{tool}|{compile_}: {need:.0f} s needed, {left:.0f} s left")
        elif tool == "eval":
            try:
                result["eval"] = eval_timing(a, Path(result["eval_checkpoint"]), work, model, cfg)
            except Exception as exc:  # report and go on to the compiled runs
                result["eval"] = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}
        else:
            record_run(a, result, model, tool, compile_, gmacs[model], peak, work, cfg, spec)
        save(a.out, result)
    result["total_s"] = round(time.monotonic() - start, 1)
    save(a.out, result)
    print(summary_table(result))


def summary_table(result: dict) -> str:
    lines = [f"{result['env'].get('gpu', result['env']['device'])}, torch {result['env']['torch']}"]
    for key, r in result["runs"].items():
        sps = r["samples_per_s"]
        mfu = "" if r["mfu"] is None else f"  MFU {100 * r['mfu']:.1f} %"
        rate = "-" if sps is None else f"{sps:9.0f}"
        lines.append(f"{key:45s} {rate} samples/s{mfu}  rc {r['returncode']}")
    for key, ratio in result["ratio_clipscale_over_open_clip_train"].items():
        lines.append(f"clipscale / open_clip_train  {key}: {ratio:.2f}x")
    ev = result.get("eval", {})
    if "speedup_eval" in ev:
        lines.append(f"eval: clipscale / CLIP_benchmark speed-up {ev['speedup_eval']:.2f}x (after imports), "
                     f"max metric diff {ev['rounds'][-1]['max_abs_metric_diff']:.2g}")
    elif ev:
        lines.append(f"eval: {ev.get('error')}")
    lines += [f"skipped: {s}" for s in result["skipped"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
