#!/usr/bin/env bash
# The whole GPU benchmark in one device call (bench/gpu/README.md): install the carried wheels,
# then bench/gpu/bench_gpu.py writes $OUT/gpu_bench.json (rewritten after every run), $OUT/log.txt
# and $OUT/nvidia-smi.txt. Through the device tool, from the repository root:
#   run(command="bash bench/gpu/run.sh", carry=[".whl"], timeout_s=600)
# Extra arguments go to bench_gpu.py (e.g. --seconds 20 --budget-s 400).
set -euo pipefail

OUT="${OUT:-bench/out/gpu}"
mkdir -p "$OUT"
if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "run.sh: no wheels in .whl/ (bench/gpu/README.md says how to fetch them)" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
python3 -c "import open_clip, open_clip_train, webdataset, clip_benchmark, ftfy, braceexpand; print('imports ok')"
set -o pipefail
python3 bench/gpu/bench_gpu.py --out "$OUT" --work /tmp/gpu-bench "$@" 2>&1 | tee "$OUT/log.txt"
