#!/usr/bin/env bash
# The first run on a lent GPU: environment facts, the gpu-marked tests, benchmarks/gpu.sh,
# then the rest of the suite on CUDA; ~5 minutes, 8 at most. Results under $OUT
# (the device tool's folder; ./gpu-out elsewhere). What to read in them:
# benchmarks/FIRST_GPU_RUN.md. Run from the repository root with the machine's own
# python3 (a CUDA torch): `bash benchmarks/first_gpu_run.sh`.
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1; set -o pipefail
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; df -h /dev/shm; echo "cores $(nproc)"
python3 - <<'EOF'
import typing, torch
from torch.utils.data._utils.pin_memory import pin_memory
class T(typing.NamedTuple):
    a: int
    def pin_memory(self): return "own"
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpus", torch.cuda.device_count())
print("pin thread calls a NamedTuple's own pin_memory():", pin_memory(T(1)) == "own")
EOF
} 2>&1 | tee $OUT/env.txt
timeout 120 python3 -m pytest -v -rfEs -p no:cacheprovider -m gpu tests 2>&1 | tee $OUT/pytest_gpu.txt
OUT=$OUT/bench timeout 240 bash benchmarks/gpu.sh 2>&1 | tee $OUT/bench.txt
timeout 100 python3 -m pytest -q -rfE -p no:cacheprovider -m "not gpu" --deselect tests/cli/test_cli.py::test_pil_is_pillow_simd tests 2>&1 | tee $OUT/pytest_rest.txt
