#!/usr/bin/env bash
# device_check.sh: the GPU check of ringplan's CUDA path, for ONE machine with one H100/H200 that
# has PyTorch and NCCL's python package but none of the build machine's packages.
#
# The binaries are built on the build machine (cmake --preset cuda && cmake --build --preset cuda
# --target test_cuda_tiles test_attention_cuda bench_attention_cuda nccl_smoke) and the build dir
# travels with the repo. They link the CUDA runtime, libstdc++ and libgcc statically; at run time
# they need: the NVIDIA driver (CUDA 13: driver >= 580), glibc >= 2.36 (built on Debian 12), and,
# for nccl_smoke only, libnccl.so.2 (found here from the python package nvidia-nccl-*).
#
# usage: bench/device_check.sh [BUILD_DIR]        (default build/cuda)
# Writes under $OUT (default ./out/device-check): env.txt, tests.txt, ours.txt/json,
# sdpa.txt/json, nccl.txt, report.md, summary.txt. Exit status: number of failed steps (0 = all ok).
#
# Steps: (1) CUDA kernel tests vs the float64 reference; (2) our forward/backward timing (the
# binary validates sampled outputs before timing) and (3) PyTorch SDPA at the same shapes (bf16,
# batch 1, 32 query heads, 8 KV heads, head dim 128, 4K/8K/16K, causal and not); (4) single-GPU
# NCCL smoke test; (5) TFLOP/s table with the ratio to PyTorch (goal: >= 70% at 8K).
set -uo pipefail

BUILD_DIR=${1:-build/cuda}
OUT=${OUT:-$PWD/out/device-check}
TOKENS=${TOKENS:-4096,8192,16384}
mkdir -p "$OUT"
: >"$OUT/summary.txt"
failed=0

log() { echo "[device_check] $*" | tee -a "$OUT/summary.txt"; }

# Finds an executable by name under the build dir (the CMake layout mirrors the source tree).
find_bin() {
  find "$BUILD_DIR" -type f -name "$1" -perm -u+x 2>/dev/null | head -n 1
}

# step NAME TIMEOUT_S LOGFILE CMD...: runs CMD with a time limit, records ok/FAILED.
step() {
  local name=$1 limit=$2 logfile=$3
  shift 3
  log "step: $name ($*)"
  timeout "$limit" "$@" >"$logfile" 2>&1
  local rc=$?
  tail -n 40 "$logfile"
  if [[ $rc -eq 0 ]] && grep -q "SKIPPED" "$logfile"; then
    # On the GPU machine a skip means the check did not happen (no device, driver too old).
    log "  $name: SKIPPED (counted as failed: this script exists to run on a GPU)"
    failed=$((failed + 1))
  elif [[ $rc -eq 0 ]]; then
    log "  $name: ok"
  else
    log "  $name: FAILED (exit $rc; log $logfile)"
    failed=$((failed + 1))
  fi
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  ldd --version 2>&1 | head -n 1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} >"$OUT/env.txt"
cat "$OUT/env.txt"

if [[ ! -d "$BUILD_DIR" ]]; then
  log "build dir '$BUILD_DIR' not found: build on the build machine and carry it (see the header)"
  exit 1
fi

# (1) kernel tests
for t in test_cuda_tiles test_attention_cuda; do
  bin=$(find_bin "$t")
  if [[ -z "$bin" ]]; then
    log "missing binary $t under $BUILD_DIR"
    failed=$((failed + 1))
    continue
  fi
  step "$t" 300 "$OUT/$t.txt" "$bin"
done
cat "$OUT"/test_*.txt >"$OUT/tests.txt" 2>/dev/null

# (2) our kernels (validated, then timed)
bin=$(find_bin bench_attention_cuda)
if [[ -n "$bin" ]]; then
  step "bench_attention_cuda" 400 "$OUT/ours.txt" "$bin" --tokens "$TOKENS" --json "$OUT/ours.json"
else
  log "missing binary bench_attention_cuda under $BUILD_DIR"
  failed=$((failed + 1))
fi

# (3) PyTorch baseline
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
step "sdpa_bench.py" 400 "$OUT/sdpa.txt" python3 "$script_dir/gpu/sdpa_bench.py" --tokens "$TOKENS" --json "$OUT/sdpa.json"

# (4) NCCL smoke test, with libnccl.so.2 from the NCCL python package (or the system)
bin=$(find_bin nccl_smoke)
if [[ -n "$bin" ]]; then
  nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
  log "libnccl from: ${nccl_lib:-system library path}"
  step "nccl_smoke" 120 "$OUT/nccl.txt" env LD_LIBRARY_PATH="${nccl_lib:+$nccl_lib:}${LD_LIBRARY_PATH:-}" "$bin"
else
  log "missing binary nccl_smoke under $BUILD_DIR"
  failed=$((failed + 1))
fi

# (5) table
python3 "$script_dir/gpu/report.py" "$OUT/ours.json" "$OUT/sdpa.json" | tee "$OUT/report.md"

log "failed steps: $failed"
exit "$failed"
