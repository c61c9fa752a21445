"""Learning rates of the BPE ladder on the real emoji data (the table in BENCHMARKS.md "Real data").

Each of tiny-S0/S1/S2-bpe trains 10,240 samples on all three styles (augment "openclip", batch 128) at
0.5x, 1x and 2x its suggested lr (clipscale/models/ladder.py BPE_LRS); the table gives the mean held-out
image retrieval recall@5 over the three styles and the last training loss.

    python bench/bench_real_lr.py --data EMOJI_DIR --out bench/out/real-lr   # EMOJI_DIR: clipscale data emoji
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SIZES = ("tiny-S0-bpe", "tiny-S1-bpe", "tiny-S2-bpe")
FACTORS = (0.5, 1.0, 2.0)

STUDY = """
[study]
name = "real-lr-{factor:g}"
output_dir = "{out}"
[datasets.all]
shards = "{data}/train/all/{{00000..00000}}.tar"
[train]
batch_size = 128
warmup_fraction = 0.1
weight_decay = 0.1
checkpoint_points = [1.0]
workers = 0
augment = "openclip"
{rules}
[[grid]]
model = {models}
dataset = "all"
samples_seen = [10240]
[eval]
suite = "{data}/emoji_suite.toml"
data_root = "{data}"
[executor]
jobs = 1
threads_per_job = 2
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="output folder of `clipscale data emoji`")
    parser.add_argument("--out", default="bench/out/real-lr")
    args = parser.parse_args()
    from clipscale.models.ladder import BPE_LRS
    from clipscale.study.runner import run_study
    from clipscale.study.spec import load_study

    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for factor in FACTORS:
        rules = "".join(f'[[rules]]\nwhen = {{model = "{m}"}}\nset = {{lr = {BPE_LRS[m] * factor:g}}}\n'
                        for m in SIZES)
        path = out / f"lr{factor:g}.toml"
        path.write_text(STUDY.format(factor=factor, out=out / "study", data=data, rules=rules,
                                     models=json.dumps(list(SIZES))))
        run_study(load_study(path), log=lambda line: None)
    print("| model | lr | held-out R@5 (%, mean of 3 styles) | final train loss |")
    print("|---|---|---|---|")
    for run in sorted((out / "study" / "runs").iterdir()):
        config = json.loads((run / "config.json").read_text())
        records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
        r5 = statistics.mean(r["metrics"]["image_retrieval_recall@5"] for r in records
                             if r["task"] == "zeroshot_retrieval")
        loss = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
        print(f"| {config['model']} | {config['lr']:g} | {100 * r5:.1f} | {loss:.2f} |")


if __name__ == "__main__":
    main()
