#!/usr/bin/env bash
# Ring-attention sweep: predicted vs measured, load balance, parallel efficiency, memory.
#
#   bench/runtime/sweep.sh BUILD_DIR OUT_DIR [BASE_PLAN]
#
# 1. Calibrates the machine with `ringplan calibrate` once per rank count that shares the
#    cores (np=2 and np=4; P=1 uses the np=2 profile: one busy core per rank in both cases).
# 2. For P in {1,2,4}, L in $SWEEP_LENGTHS, scheme in {contiguous,zigzag,striped}, kernel in
#    {flash,materialized}: writes a plan variant (mesh cp=P, seq_len L, cp_scheme, attention)
#    and runs `mpirun -np P ringplan run PLAN --format json --profile PROFILE`.
# 3. bench/runtime/aggregate.py turns the JSON files into the markdown tables of
#    the runtime section of BENCHMARKS.md.
# The profile is measured on single kernel blocks and ping-pong / ring exchanges, never on the
# ring runs it predicts. Environment: SWEEP_LENGTHS (default "1024 2048"), SWEEP_ITERS (3),
# SWEEP_WARMUP (1), SWEEP_PS ("1 2 4").
set -euo pipefail
build=${1:?usage: sweep.sh BUILD_DIR OUT_DIR [BASE_PLAN]}
out=${2:?usage: sweep.sh BUILD_DIR OUT_DIR [BASE_PLAN]}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ringplan=$build/cli/ringplan
mpirun_flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && mpirun_flags+=(--allow-run-as-root)
lengths=${SWEEP_LENGTHS:-"1024 2048"}
ps=${SWEEP_PS:-"1 2 4"}
iters=${SWEEP_ITERS:-3}
warmup=${SWEEP_WARMUP:-1}
mkdir -p "$out"

base=${3:-$out/base_plan.yaml}
if [ ! -f "$base" ]; then
  "$ringplan" plan "$root/configs/experiments/cpu_small.yaml" -o "$base" > /dev/null
fi

for np in 2 4; do
  if [ ! -f "$out/profile_np$np.yaml" ]; then
    echo "calibrating with $np ranks" >&2
    mpirun -np $np "${mpirun_flags[@]}" "$ringplan" calibrate --plan "$base" --tokens 128,256,512,1024 \
      --name "calibrated_np$np" -o "$out/profile_np$np.yaml"
  fi
done

for P in $ps; do
  profile=$out/profile_np$(( P < 2 ? 2 : P )).yaml
  for L in $lengths; do
    for scheme in contiguous zigzag striped; do
      for kernel in flash materialized; do
        tag=P${P}_L${L}_${scheme}_${kernel}
        plan=$out/plan_$tag.yaml
        # Plan variant: the options block uses 4-space indentation, the cluster's efficiency
        # curve (`attention: {max...}`) does not match `attention: flash`.
        sed -e "s/^    seq_len: .*/    seq_len: $L/" \
            -e "s/^  mesh: .*/  mesh: {dp: 1, tp: 1, cp: $P, pp: 1}/" \
            -e "s/^  gpus: .*/  gpus: $P/" \
            -e "s/^    cp_scheme: [a-z]*$/    cp_scheme: $scheme/" \
            -e "s/^    attention: flash$/    attention: $kernel/" "$base" > "$plan"
        echo "run $tag" >&2
        mpirun -np "$P" "${mpirun_flags[@]}" "$ringplan" run "$plan" --iters "$iters" --warmup "$warmup" \
          --format json --profile "$profile" > "$out/run_$tag.json"
      done
    done
  done
done
python3 "$here/aggregate.py" "$out"
