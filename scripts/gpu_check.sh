#!/usr/bin/env bash
# The Triton backend on a real GPU (CUDA or ROCm), from a copy of this repository, with
# no network. Needs python3 with torch (CUDA/ROCm build) and triton; builds the C++ core
# (the CPU backend the tests compare against) with cmake, ninja and scikit-build-core.
# apache-tvm-ffi is imported from the environment or installed from wheels in .whl/.
#   1. the GPU test subset: tests/test_triton_backend.py on the device;
#   2. bench/bench_gpu.py: sageattn vs torch SDPA (flash), bf16, N in {4096, 16384},
#      D in {64, 128}, causal and not; torch.compile and CUDA-graph capture;
#   3. writes bench/results/gpu-<device>.md (and copies it and the logs to $OUT if set).
# About 5-8 minutes on an H100/H200, most of it Triton compiling kernel variants.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0

if ! $PY -c "import tvm_ffi" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/sa-site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/sa-site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "gpu_check: apache-tvm-ffi is missing; carry its wheel in .whl/ (see /work/.library/device/README.md)"
    exit 2
  fi
fi
$PY -c "import torch, triton; assert torch.cuda.is_available(), 'no GPU visible'; \
print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))" || exit 2

echo "=== building the C++ core (for the CPU-backend comparisons)"
start=$(date +%s)
rm -rf /tmp/sa-pkg
$PY -m pip install -q --no-index --no-build-isolation --no-deps --target /tmp/sa-pkg . || exit 2
export SAGEATTN_LIBRARY=/tmp/sa-pkg/sageattention/libsageattn_cpu.so
echo "built in $(( $(date +%s) - start )) s"

device=$($PY -c "import re, torch; print(re.sub(r'[^A-Za-z0-9]+', '-', torch.cuda.get_device_name(0)).strip('-').lower())")
mkdir -p bench/results
out=bench/results/gpu-$device.md

echo "=== GPU tests: tests/test_triton_backend.py on $device"
start=$(date +%s)
$PY -m pytest -q -p no:cacheprovider tests/test_triton_backend.py 2>&1 | tee /tmp/gpu_tests.log || status=1
echo "tests took $(( $(date +%s) - start )) s"

echo "=== benchmark vs torch SDPA (flash), torch.compile, CUDA graphs"
$PY bench/bench_gpu.py --out "$out" 2>&1 | tee /tmp/gpu_bench.log || status=1
{ echo; echo "Tests: \`$(tail -n 1 /tmp/gpu_tests.log)\`"; } >> "$out"

if [ -n "${OUT:-}" ]; then cp "$out" /tmp/gpu_tests.log /tmp/gpu_bench.log "$OUT"/ 2>/dev/null; fi
exit $status
