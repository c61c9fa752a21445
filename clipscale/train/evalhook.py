"""Optional evaluation after each checkpoint point, through clipscale.evals when it is present.

The eval stage is optional for training: if `clipscale.evals.evaluate_checkpoint` is missing, the
hook says so and training goes on; an eval failure is reported but never loses the run. Records
go to RUN_DIR/results.jsonl exactly as `evaluate_run` writes them (label relative to the run dir),
so a later `clipscale eval RUN_DIR` skips what the hook already did.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def run_eval_hook(checkpoint: Path, *, suite: str, data_root: str | None, run_dir: Path,
                  device: str = "cpu") -> list[dict[str, Any]] | None:
    try:
        from clipscale.evals import evaluate_checkpoint, load_suite
    except ImportError:
        print("clipscale train: eval_suite set but clipscale.evals is not available; skipping evaluation",
              file=sys.stderr)
        return None
    from clipscale.io import append_jsonl

    results = run_dir / "results.jsonl"
    try:
        return evaluate_checkpoint(
            checkpoint, suite=load_suite(suite, root=data_root), device=device,
            on_record=lambda record: append_jsonl(results, record),
            checkpoint_label=str(checkpoint.relative_to(run_dir)),
        )
    except Exception as exc:  # evaluation must not kill a long training run
        print(f"clipscale train: evaluation of {checkpoint.name} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return None
