"""Benchmark: training throughput and forward GMACs of every tiny-ladder model on 2 CPU threads.

Targets (issue 2): GMACs span >= 30x across the ladder, the smallest model trains >= 500 samples/s and
the largest >= 30 samples/s on 2 cores. One step = forward + ClipLoss + backward + AdamW step, fp32,
batch 128, on synthetic random images/tokens made once up front, so data loading is not measured.
Reports wall-clock samples/s (what a user sees) and samples per CPU-second of this process (less
sensitive to other load; ~2x the wall number when both threads run in parallel undisturbed). The
machine is shared: record `uptime` next to the result.

    .venv/bin/python bench/bench_ladder.py [--seconds 8] [--batch 128] [--threads 2] [--check]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from open_clip.loss import ClipLoss

from clipscale.models import LADDER, create_model, get_tokenizer, image_size, model_config
from clipscale.models.flops import count_flops

TARGET_SPAN, TARGET_SMALLEST, TARGET_LARGEST = 30.0, 500.0, 30.0


def synthetic_batch(name: str, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and captions shaped like the model's inputs: <sot> words <eot>, zero-padded."""
    size, ctx = image_size(name), get_tokenizer(name).context_length
    vocab = int(model_config(name)["text_cfg"]["vocab_size"])
    images = torch.randn(batch, 3, size, size, generator=generator)
    texts = torch.zeros(batch, ctx, dtype=torch.long)
    lengths = torch.randint(4, ctx - 1, (batch,), generator=generator)
    for row, n in enumerate(lengths.tolist()):
        texts[row, 0] = 1
        texts[row, 1:n] = torch.randint(3, vocab - 1, (n - 1,), generator=generator)
        texts[row, n] = vocab - 1  # <eot> has the highest id: open_clip pools there
    return images, texts


def train_speed(name: str, batch: int, seconds: float, warmup: int = 3) -> dict[str, float]:
    """Steps for at least `seconds` after `warmup` steps; returns samples/s (wall and per CPU-second)."""
    torch.manual_seed(0)
    model = create_model(name).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.1)
    loss_fn = ClipLoss()
    images, texts = synthetic_batch(name, batch, torch.Generator().manual_seed(0))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(*model(images, texts))
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(warmup):
        step()
    steps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while steps < 3 or time.perf_counter() - t0 < seconds:
        loss = step()
        steps += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not torch.isfinite(torch.tensor(loss)):
        raise RuntimeError(f"{name}: loss became {loss}")
    return {"samples_per_s": steps * batch / wall, "samples_per_cpu_s": steps * batch / cpu,
            "ms_per_step": 1e3 * wall / steps, "steps": steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per model (default 8)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=list(LADDER), help="default: the whole ladder")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ladder target is missed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# tiny ladder: fp32, batch {args.batch}, {args.threads} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} (1 min) at start")
    print("| model | vision w/layers/patch | text w/layers | Mparams | GMACs/sample | samples/s | "
          "samples/CPU-s | ms/step |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for name in args.models:
        rung, flops = LADDER[name], count_flops(name)
        speed = train_speed(name, args.batch, args.seconds)
        results[name] = (flops.gmacs, speed["samples_per_s"])
        print(f"| {name} | {rung.vision_width}/{rung.vision_layers}/{rung.patch_size} | "
              f"{rung.text_width}/{rung.text_layers} | {flops.mparams:.3f} | {flops.gmacs:.5f} | "
              f"{speed['samples_per_s']:,.0f} | {speed['samples_per_cpu_s']:,.0f} | "
              f"{speed['ms_per_step']:.1f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at end")
    return _report_targets(results) if args.check else 0


def _report_targets(results: dict[str, tuple[float, float]]) -> int:
    by_cost = sorted(results.values())
    (g_small, s_small), (g_large, s_large) = by_cost[0], by_cost[-1]
    span = g_large / g_small
    checks = [(f"GMACs span {span:.1f}x >= {TARGET_SPAN:.0f}x", span >= TARGET_SPAN),
              (f"smallest {s_small:,.0f} samples/s >= {TARGET_SMALLEST:.0f}", s_small >= TARGET_SMALLEST),
              (f"largest {s_large:,.0f} samples/s >= {TARGET_LARGEST:.0f}", s_large >= TARGET_LARGEST)]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
