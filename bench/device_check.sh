#!/usr/bin/env bash
# device_check.sh: the GPU check of ringplan's CUDA path, in one call, on ONE machine with one
# H100/H200 that has PyTorch and NCCL's python package but none of the build machine's packages.
#
# Prepare on the build machine (sm_90 is what an H100/H200 runs):
#   cmake -S . -B build/gpu -G Ninja -DRINGPLAN_ENABLE_CUDA=ON -DRINGPLAN_CUDA_ARCHITECTURES=90
#   cmake --build build/gpu --target ringplan_gpu     # every GPU target (cmake/RingplanGpuTargets.cmake)
#   scripts/packaging/make_bundle.sh build/gpu build/bundle     # binaries + OpenMPI, fmt, yaml-cpp (~30 MiB)
# The bundle carries build/gpu/gpu_executables.txt, CMake's list of the GPU executables: step 1
# runs every test_* binary on it (a listed binary missing from the bundle counts as failed).
# then carry build/bundle to the GPU machine and run there, from the repository root:
#   bench/device_check.sh build/bundle
# (libnccl.so.2 comes from the GPU machine's `nvidia.nccl` python package; env.sh finds it.)
# A lending tool that returns only a few files from the GPU machine gets them as one archive:
#   D=/tmp/dc; OUT=$D BUDGET_S=420 bash bench/device_check.sh build/bundle >$D/console.txt 2>&1; \
#     tar czf "$RESULTS/dc.tgz" -C /tmp dc      # $RESULTS: the folder that comes back
#
# Writes under $OUT (default ./out/device-check): env.txt, one log per step, ours.json, ours_head_major.json,
# sdpa.json, gemm.json, calibrate.json, calibrated.yaml, step_l4.json, step_l8.json, run.json, run_trace.json, report.md, summary.txt,
# and with budget to spare torch_step_torchtitan_kv8.json / _kv32.json (step 7) and ring_step.json (step 8). Exit status: the number of failed
# steps (0 = all ok). On the GPU machine a SKIPPED step counts as failed: it did not happen.
#
# Steps:
#   1. CUDA kernel tests against the float64 reference (tile logic, kernels, the CUDA ring) and
#      the GPU training step against the CPU float32 step (test_step_cuda);
#      error bounds per precision are stated in the tests' headers
#   2. our forward/backward timing: the wgmma and mma.sync kernels, the library's default first
#      (the binary validates sampled outputs of each before timing)
#   3. PyTorch scaled_dot_product_attention at the same shapes (bf16, batch 1, 32 query heads,
#      8 KV heads, head dim 128, 4K/8K/16K tokens, causal and not; CUDA events, warm-up, median);
#      then our primary kernels again in the head-major launch order (each head's tiles in
#      turn, the baseline of the default tile-major order), for the tile-major / head-major ratio
#      in the table of step 6
#   4. single-GPU NCCL smoke test of the communicator
#   5. `ringplan plan` + `ringplan run --device cuda` on one rank (NCCL + the kernels), with the
#      prediction from the cluster profile of this GPU
#   6. the TFLOP/s table with the ratio to PyTorch (goal: >= 70% at 8K)
#   7. optional, only if at least 75 s of the budget remain: PyTorch whole steps of torchtitan's
#      Llama block (GQA and MHA) for the eager element-wise model
#   8. optional, only if at least 50 s remain: one rank's zigzag and striped ring steps replayed
#      without communication (kernels vs the merges and accumulations around them)
set -uo pipefail

BUNDLE=${1:-build/bundle}
OUT=${OUT:-$PWD/out/device-check}
TOKENS=${TOKENS:-4096,8192,16384}
# The whole script must end within BUDGET_S (a lent GPU is lent for minutes): each step gets
# min(its own limit, what is left), and a step with under 15 s left is not started.
BUDGET_S=${BUDGET_S:-520}
mkdir -p "$OUT"
: >"$OUT/summary.txt"
failed=0
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/.." && pwd)

log() { echo "[device_check] $*" | tee -a "$OUT/summary.txt"; }

# step NAME TIMEOUT_S LOGFILE CMD...: runs CMD with a time limit, records ok / SKIPPED / FAILED.
step() {
  local name=$1 limit=$2 logfile=$3
  shift 3
  local left=$((BUDGET_S - SECONDS - 5))
  if ((left < 15)); then
    log "  $name: NOT RUN (only ${left} s of the ${BUDGET_S} s budget left)"
    failed=$((failed + 1))
    return
  fi
  ((limit > left)) && limit=$left
  log "step: $name (limit ${limit} s)"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$logfile" 2>&1
  local rc=$?
  tail -n 30 "$logfile"
  if [[ $rc -eq 0 ]] && grep -q "SKIPPED" "$logfile"; then
    log "  $name: SKIPPED after $((SECONDS - t0)) s (counted as failed: this script exists to run on a GPU)"
    failed=$((failed + 1))
  elif [[ $rc -eq 0 ]]; then
    log "  $name: ok ($((SECONDS - t0)) s)"
  else
    log "  $name: FAILED (exit $rc after $((SECONDS - t0)) s; log $(basename "$logfile"))"
    failed=$((failed + 1))
  fi
}

if [[ ! -f "$BUNDLE/env.sh" ]]; then
  log "bundle '$BUNDLE' not found (no env.sh): build it with scripts/packaging/make_bundle.sh and carry it (see the header)"
  exit 1
fi
# shellcheck disable=SC1091
source "$BUNDLE/env.sh"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  ldd --version 2>&1 | head -n 1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  python3 -c 'import nvidia.nccl, os; print("nccl python package:", list(nvidia.nccl.__path__)[0])' 2>&1
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} >"$OUT/env.txt"
cat "$OUT/env.txt"

bin() {
  if [[ -x "$BUNDLE/bin/$1" ]]; then echo "$BUNDLE/bin/$1"; else echo ""; fi
}

# The GPU tests: the test_* names of CMake's list, in its order (kernels, then the ring and step).
gpu_tests=()
if [[ -f "$BUNDLE/gpu_executables.txt" ]]; then
  while read -r t; do [[ $t == test_* ]] && gpu_tests+=("$t"); done <"$BUNDLE/gpu_executables.txt"
fi
if ((${#gpu_tests[@]} == 0)); then
  log "no GPU tests listed in $BUNDLE/gpu_executables.txt: make the bundle from a CUDA build (see the header)"
  failed=$((failed + 1))
fi

# 1. kernel and ring tests
for t in "${gpu_tests[@]}"; do
  b=$(bin "$t")
  if [[ -z "$b" ]]; then
    log "missing binary $t in $BUNDLE/bin"
    failed=$((failed + 1))
    continue
  fi
  step "$t" 90 "$OUT/$t.txt" "$b" -s
done

# 1b. (SANITIZE=1) compute-sanitizer racecheck and memcheck on the kernel tests' small cases: the
# mma kernels' shared-memory double buffers and ldmatrix addressing.
if [[ "${SANITIZE:-0}" == 1 ]] && command -v compute-sanitizer >/dev/null 2>&1; then
  for tool in racecheck memcheck; do
    for t in "${gpu_tests[@]}"; do
      [[ $t == test_attention_* ]] || continue  # the kernel tests
      b=$(bin "$t")
      [[ -n "$b" ]] || continue
      step "compute-sanitizer --tool $tool $t" 120 "$OUT/sanitize_${tool}_$t.txt" \
        compute-sanitizer --tool "$tool" --error-exitcode 9 "$b" -tc="${SANITIZE_CASES:-*unsorted*,*partial*}"
    done
  done
fi

# 2. our kernels (validated, then timed)
b=$(bin bench_attention_cuda)
if [[ -n "$b" ]]; then
  rm -f "$OUT/ours.json" "$OUT/ours_head_major.json"  # report.py must not read an earlier run's
  step "bench_attention_cuda" 150 "$OUT/ours.txt" "$b" --tokens "$TOKENS" --json "$OUT/ours.json"
else
  log "missing binary bench_attention_cuda"
  failed=$((failed + 1))
fi

# 3. PyTorch baseline
step "sdpa_bench.py" 150 "$OUT/sdpa.txt" python3 "$script_dir/gpu/sdpa_bench.py" --tokens "$TOKENS" --json "$OUT/sdpa.json"

# 3a. cuBLAS GEMM rates at the linear layers' shapes (Llama-3 8B/70B, TP 1-8, bf16 and FP8) and
# the HBM copy rate, through PyTorch: the measured matmul curve of this card (gemm_bench.py's header).
step "gemm_bench.py" 150 "$OUT/gemm.txt" python3 "$script_dir/gpu/gemm_bench.py" --json "$OUT/gemm.json"

# 3b. The same primary kernels in the head-major launch order (each head's tiles in turn, the
# baseline of the default tile-major order), validated and timed in this run: the comparison
# report.py prints. After the PyTorch baseline, so that a short budget drops this one first.
b=$(bin bench_attention_cuda)
if [[ -n "$b" ]]; then
  step "bench_attention_cuda --block-order head_major" 90 "$OUT/ours_head_major.txt" "$b" --tokens "$TOKENS" \
    --primary-only --block-order head_major --json "$OUT/ours_head_major.json"
fi

# 5. ringplan run on one GPU: plan the one-GPU experiment, run it on NCCL + the CUDA kernels.
# The prediction uses the datasheet profile of the GPU found here.
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
case "$gpu_name" in
  *H200*) profile=$repo/configs/clusters/h200.yaml ;;
  *H100*) profile=$repo/configs/clusters/dgx_h100.yaml ;;
  *A100*) profile=$repo/configs/clusters/dgx_a100_80gb.yaml ;;
  *) profile=$repo/configs/clusters/h200.yaml ;;
esac
log "GPU '$gpu_name': prediction profile $(basename "$profile")"
step "ringplan plan (1 GPU)" 30 "$OUT/plan.txt" ringplan plan "$repo/configs/experiments/gpu_single.yaml" -o "$OUT/plan.yaml"
step "ringplan run --device cuda (table)" 90 "$OUT/run.txt" \
  ringplan run "$OUT/plan.yaml" --scope attention --device cuda --profile "$profile" --iters 10 --warmup 3 --trace "$OUT/run_trace.json"
step "ringplan run --device cuda (json)" 90 "$OUT/run_json.txt" \
  bash -c "ringplan run '$OUT/plan.yaml' --scope attention --device cuda --profile '$profile' --iters 10 --warmup 3 --format json >'$OUT/run.json'"

# 5a. Calibrate this GPU (cuBLAS GEMMs at plan shapes, bf16 and FP8; the attention kernels; HBM)
# into a profile; the step runs below are predicted on it.
step "ringplan calibrate --device cuda" 150 "$OUT/calibrate.txt" \
  ringplan calibrate --device cuda --base "$profile" --name calibrated --measurements "$OUT/calibrate.json" \
  -o "$OUT/calibrated.yaml"
step_profile=$profile
[[ -s "$OUT/calibrated.yaml" ]] && step_profile=$OUT/calibrated.yaml

# 5b. The whole training step on this GPU (cuBLAS + the kernels + NCCL): Llama 3 8B's layer shape
# at 16K tokens, 4 and 8 layers (the shapes bench/gpu/torch_step_bench.py measured with PyTorch),
# against the prediction on the profile calibrated in 5a. test_step_cuda (step 1) checked its parity with the
# CPU step.
for layers in 4 8; do
  step "ringplan run --scope step --device cuda --layers $layers" 150 "$OUT/step_l$layers.txt" \
    ringplan run "$OUT/plan.yaml" --scope step --device cuda --layers "$layers" --steps 5 --warmup 2 --profile "$step_profile"
  step "ringplan run --scope step --device cuda --layers $layers (json)" 150 "$OUT/step_l${layers}_json.txt" \
    bash -c "ringplan run '$OUT/plan.yaml' --scope step --device cuda --layers $layers --steps 5 --warmup 2 --profile '$step_profile' --format json >'$OUT/step_l$layers.json'"
done

# 4. (last: ringplan run uses NCCL too) NCCL smoke test
b=$(bin nccl_smoke)
if [[ -n "$b" ]]; then
  step "nccl_smoke" 45 "$OUT/nccl.txt" "$b"
else
  log "missing binary nccl_smoke"
  failed=$((failed + 1))
fi

# 6. table
python3 "$script_dir/gpu/report.py" "$OUT/ours.json" "$OUT/sdpa.json" "$OUT/ours_head_major.json" | tee "$OUT/report.md"

# 7. (only with budget to spare: the kernel checks above come first) PyTorch whole steps with
# torchtitan's Llama block (bench/gpu/torch_step_bench.py --block torchtitan), GQA and MHA, 16K
# tokens, 4 layers: the measurements the cost model's `elementwise: eager` memory (repeat_kv's
# expanded K and V, no RoPE input) and traffic are to be checked against; encode them as cases
# beside configs/validation/h200_torch_step.
for kv in 8 32; do
  if ((BUDGET_S - SECONDS - 5 >= 75)); then
    step "torch_step_bench --block torchtitan --kv-heads $kv" 70 "$OUT/torch_step_torchtitan_kv$kv.txt" \
      python3 "$script_dir/gpu/torch_step_bench.py" --block torchtitan --kv-heads "$kv" --seq 16384 --layers 4 \
      --json "$OUT/torch_step_torchtitan_kv$kv.json"
  else
    log "  torch_step_bench --block torchtitan --kv-heads $kv: left out (optional; $((BUDGET_S - SECONDS)) s of the budget left)"
  fi
done

# 8. (only with budget to spare) One rank's ring steps of ring-flash-attention's zigzag and striped
# schemes replayed on this GPU without communication (bench/gpu/ring_step_bench.py, checked against
# causal attention over the whole sequence first): the time outside the kernels per ring step,
# which decides whether the cost model can reach the published 8-GPU shares of ideal (#14).
if ((BUDGET_S - SECONDS - 5 >= 50)); then
  step "ring_step_bench" 45 "$OUT/ring_step.txt" \
    python3 "$script_dir/gpu/ring_step_bench.py" --json "$OUT/ring_step.json"
else
  log "  ring_step_bench: left out (optional; $((BUDGET_S - SECONDS)) s of the budget left)"
fi

log "failed steps: $failed"
exit "$failed"
