#!/usr/bin/env bash
# `alexcli bench` on a CUDA machine: ~2-4 minutes expected, 7 at most (the limits):
#   1. one GPU: the paper preset's step (bf16 autocast, channels-last, fused SGD) against
#      the GPU's matmul/conv peak and against plain eager fp32, and the loader with its
#      device-side augmentation (the mean crops, colour noise and float conversion on
#      the GPU) fed by every core but one;
#   2. two towers (model parallel): cuda:0,cuda:1 when there are two GPUs, else both
#      towers on cuda:0 (the two-device code path on one device);
#   3. the step at batch 512, where a GPU this fast stops being launch-bound.
# Each writes JSON to $OUT (default ./bench-gpu); the console gets the tables.
#
#   bash benchmarks/gpu.sh                 # from the repository root, torch with CUDA
#   PYTHON=.venv/bin/python OUT=/tmp/b bash benchmarks/gpu.sh
set -euo pipefail

cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
out="${OUT:-bench-gpu}"
mkdir -p "$out"

"$py" - <<'EOF' | tee "$out/machine.txt"
import os, torch
assert torch.cuda.is_available(), "no CUDA device: this script is for GPU machines"
print("torch", torch.__version__, "cuda", torch.version.cuda, "cores", os.cpu_count())
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}", torch.cuda.get_device_name(i))
EOF

gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
towers="cuda:0,cuda:0"
if [ "$gpus" -ge 2 ]; then towers="cuda:0,cuda:1"; fi

failed=()
run() {  # name, time limit, bench arguments: JSON to $out/name.json, a table here
    local name=$1 limit=$2 rc=0
    shift 2
    echo "== $name: alexcli bench $*" >&2
    # A failed or timed-out run is reported and the next one still runs: a GPU lease is
    # short, and each run's figures stand on their own.
    timeout "$limit" "$py" -m alexcli bench "$@" --json >"$out/$name.json" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "== $name FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ", over ${limit} s"))" >&2
        failed+=("$name")
        return 0
    fi
    "$py" - "$out/$name.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for f in r["figures"]:
    target = f"  (target {f['target']:g})" if f["target"] is not None else ""
    print(f"{f['stage']:8} {f['name']:28} {f['value']:>10,.0f}  vs {f['limit']:30} "
          f"{f['limit_value']:>10,.0f}  ratio {f['ratio']:.2f}{target}")
t = r["details"].get("train")
if t:
    print("  peak GFLOP/s", t["peak_gflops"], " step images/s", t["step_images_per_s"])
    print("  top ops", [(o["op"], o["share"]) for o in t["step_top_ops"][:5]])
EOF
}

jobs=$(( $(nproc) > 16 ? 16 : $(nproc) ))
run one_gpu 180 --devices cuda:0 --amp bf16 --jobs "$jobs" --seconds 5
run two_towers 120 --only train --devices "$towers" --amp bf16 --seconds 5
run batch512 120 --only train --devices cuda:0 --amp bf16 --batch-size 512 --seconds 5
echo "JSON in $out/" >&2
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
