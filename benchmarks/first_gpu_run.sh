#!/usr/bin/env bash
# The first run on a lent GPU, 8 minutes at most in all (BUDGET, seconds): the machine's
# facts, the gpu-marked tests, then benchmarks/gpu.sh's runs one by one. Each part has its
# own time limit and writes its results under $OUT as it ends, so a cut run still returns
# what it did; a part that no longer fits the budget is skipped with a line saying so.
# The CPU suite is left out (CI runs it). Without a GPU it says so and runs what needs
# none (the gpu tests then collect and skip). What to read in the results:
# benchmarks/FIRST_GPU_RUN.md.
#
#   bash benchmarks/first_gpu_run.sh          # repository root, python3 with a CUDA torch
#   PYTHON=.nox/tests/bin/python bash benchmarks/first_gpu_run.sh    # any machine
#
# Results ($OUT, default ./gpu-out; the device tool brings back 8 files at most):
# summary.txt (facts, one line per part), pytest_gpu.txt, bench.txt (the tables) and
# bench/{one_gpu,two_towers,batch512,compiled}.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
py=${PYTHON:-python3}
BUDGET=${BUDGET:-480}
mkdir -p "$OUT/bench"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
summary=$OUT/summary.txt
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

part() {  # name, time limit (s), file, command…: output to the file, one line to summary
    local name=$1 limit=$2 file=$3 rc=0 t0=$SECONDS
    shift 3
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 20 ]; then
        say "$name: skipped: ${left} s of the ${BUDGET} s budget left"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    timeout -k 5 "$limit" "$@" >>"$file" 2>&1 || rc=$?
    local cut=""
    [ "$rc" -eq 124 ] && cut=" (cut at its ${limit} s)"
    say "$name: exit ${rc}${cut} after $((SECONDS - t0)) s -> $file"
}

# --- what the machine has: CUDA, and every package the code and its tests import
say "first_gpu_run.sh $(date -u +%FT%TZ), budget ${BUDGET} s, python: $py"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
    || echo "nvidia-smi: none here (no NVIDIA driver)"
  df -h /dev/shm 2>&1 | tail -1
  echo "cores $(nproc)"; } | tee -a "$summary"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then  # wheels carried here (FIRST_GPU_RUN.md)
    "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/site && say "installed from .whl: $(ls .whl)"
fi
facts=$(timeout 60 "$py" - <<'EOF' 2>&1
import importlib.util, typing
need = ["torch", "numpy", "typer", "rich", "h5py", "joblib", "scipy", "safetensors", "PIL",
        "pytest"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
print("missing:", " ".join(missing) if missing else "none")
optional = [m for m in ("tensorboardX", "onnx", "onnxruntime", "onnxscript")
            if importlib.util.find_spec(m) is None]
print("optional extras absent (their tests skip):", " ".join(optional) or "none")
if "torch" not in missing:
    import torch
    from torch.utils.data._utils.pin_memory import pin_memory
    print("torch", torch.__version__, "cuda", torch.version.cuda,
          "cudnn", torch.backends.cudnn.version(), "gpus", torch.cuda.device_count())
    for i in range(torch.cuda.device_count()):
        print(f"cuda:{i}", torch.cuda.get_device_name(i))
    if torch.cuda.is_available():
        class T(typing.NamedTuple):
            a: int
            def pin_memory(self): return "own"
        print("pin thread calls a NamedTuple's own pin_memory():", pin_memory(T(1)) == "own")
EOF
)
say "$facts"
missing=$(echo "$facts" | sed -n 's/^missing: //p')
gpus=$(echo "$facts" | sed -n 's/.* gpus \([0-9]*\)$/\1/p')
if [ -z "$missing" ] || [ "$missing" != none ]; then
    say "MISSING: ${missing:-python3 did not answer}: no registry is reachable from a lent" \
        "machine; carry the wheels in .whl (FIRST_GPU_RUN.md). Parts that need them skipped."
fi
if [ "${gpus:-0}" -eq 0 ]; then
    say "NO GPU: $([ -n "$gpus" ] && echo "torch sees no CUDA device here" || echo "no torch to" \
        "ask"); the gpu tests only collect and skip, and the GPU benchmarks are skipped."
fi

# --- the parts, most telling first
if [ "$missing" = none ]; then
    part pytest_gpu 130 "$OUT/pytest_gpu.txt" \
        "$py" -m pytest -v -rfEs -p no:cacheprovider -m gpu tests
else
    say "pytest_gpu: skipped: missing $missing"
fi
for run in one_gpu two_towers batch512 compiled; do
    if [ "$missing" != none ] || [ "${gpus:-0}" -eq 0 ]; then
        say "bench $run: skipped: $([ "$missing" != none ] && echo "missing $missing" || echo "no GPU")"
        continue
    fi
    limit=$(case $run in one_gpu) echo 125 ;; compiled) echo 135 ;; *) echo 55 ;; esac)
    OUT=$OUT/bench part "bench $run" "$limit" "$OUT/bench.txt" bash benchmarks/gpu.sh "$run"
done
say "done in $SECONDS s of the ${BUDGET} s budget; results in $OUT"
