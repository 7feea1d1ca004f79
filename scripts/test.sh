#!/usr/bin/env bash
# Sets up and runs the test suite: installs the Debian packages, then for each preset given
# (default: cpu) configures, builds and runs every test with CTest.
#   cpu   Release CPU build (no CUDA needed)
#   asan  AddressSanitizer + UndefinedBehaviorSanitizer build
#   cuda  CUDA kernels + NCCL communicator (needs nvcc; GPU tests report SKIPPED without a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
presets=("$@")
[ "${#presets[@]}" -gt 0 ] || presets=(cpu)
for p in "${presets[@]}"; do
  case "$p" in
    cpu|asan|cuda) ;;
    *) echo "test.sh: unknown preset '$p' (valid: cpu, asan, cuda)" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh --tests
source scripts/mpi_env.sh
jobs=$(nproc)

for p in "${presets[@]}"; do
  if [ "$p" = cuda ] && ! command -v nvcc >/dev/null 2>&1; then
    echo "test.sh: preset cuda needs nvcc on PATH (CUDA Toolkit); skipping it"
    continue
  fi
  echo "=== preset $p ==="
  cmake --preset "$p"
  if [ "$p" = cuda ]; then
    # The CPU code is the same as in the cpu preset: build and test only the GPU path here
    # (without a GPU its device tests report SKIPPED).
    cmake --build --preset cuda -j "$jobs" --target ringplan_gpu
    ctest --preset cuda -j "$jobs" -R "cuda"
    continue
  fi
  cmake --build --preset "$p" -j "$jobs"
  extra=()
  # The 8-rank ring tests (label "long") run once, in the cpu preset.
  [ "$p" = cpu ] || extra=(--label-exclude long)
  ctest --preset "$p" -j "$jobs" "${extra[@]}"
done
