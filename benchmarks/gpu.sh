#!/usr/bin/env bash
# `alexcli bench` on a CUDA machine, run by run, each with its own time limit (~6 minutes
# at most for all four):
#   one_gpu     the paper preset's step (bf16 autocast, channels-last, fused SGD) against
#               the GPU's matmul/conv peak and against plain eager fp32, and the loader
#               with its device-side augmentation (the mean crops, colour noise and float
#               conversion on the GPU) fed by every core but one;
#   two_towers  model parallel: cuda:0,cuda:1 when there are two GPUs, else both towers on
#               cuda:0 (the two-device code path on one device);
#   batch512    the step at batch 512, where a GPU this fast stops being launch-bound;
#   compiled    the tuned step through torch.compile (`train --compile`) against it eager.
# Each writes JSON to $OUT/NAME.json (default ./bench-gpu); the console gets the tables. A
# run that fails or overruns is named, and the next one still runs.
#
#   bash benchmarks/gpu.sh                       # every run, from the repository root
#   bash benchmarks/gpu.sh one_gpu compiled      # these runs only
#   PYTHON=.venv/bin/python OUT=/tmp/b bash benchmarks/gpu.sh
set -euo pipefail

cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
out="${OUT:-bench-gpu}"
seconds="${SECONDS_EACH:-3}"  # each rate timed at least this long
mkdir -p "$out"

"$py" - <<'EOF'
import os, sys, torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this script is for GPU machines")
print("torch", torch.__version__, "cuda", torch.version.cuda, "cores", os.cpu_count())
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}", torch.cuda.get_device_name(i))
EOF

gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
towers="cuda:0,cuda:0"
if [ "$gpus" -ge 2 ]; then towers="cuda:0,cuda:1"; fi
jobs=$(( $(nproc) > 16 ? 16 : $(nproc) ))

failed=()
run() {  # name, time limit, bench arguments: JSON to $out/name.json, a table here
    local name=$1 limit=$2 rc=0
    shift 2
    echo "== $name: alexcli bench $* (at most ${limit} s)"
    timeout -k 5 "$limit" "$py" -m alexcli bench "$@" --json >"$out/$name.json" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "== $name FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ", over ${limit} s"))"
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
print(f"  {r['seconds']:.0f} s")
EOF
}

one() {
    case "$1" in
        one_gpu) run one_gpu 120 --devices cuda:0 --amp bf16 --jobs "$jobs" --seconds "$seconds" ;;
        two_towers) run two_towers 50 --only train --devices "$towers" --amp bf16 --seconds "$seconds" ;;
        batch512) run batch512 50 --only train --devices cuda:0 --amp bf16 --batch-size 512 \
            --seconds "$seconds" ;;
        compiled) run compiled 130 --only train --devices cuda:0 --amp bf16 --compile \
            --seconds "$seconds" ;;
        *) echo "unknown run $1 (one_gpu, two_towers, batch512, compiled)"; failed+=("$1") ;;
    esac
}

for name in "${@:-one_gpu two_towers batch512 compiled}"; do
    for each in $name; do one "$each"; done
done
echo "JSON in $out/"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
