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
# SWEEP_WARMUP (1), SWEEP_PS ("1 2 4"), SWEEP_REPEATS (1: see "Repetitions" below).
# Progress: when stderr is a terminal, one line "row i/N: <row>, elapsed T, ETA T" is redrawn
# in place (\r) before each run and erased at the end; otherwise stderr gets the plain
# "run <tag>" log lines. Either way the files in OUT_DIR are the same.
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
repeats=${SWEEP_REPEATS:-1}
mkdir -p "$out"

# Repetitions: the whole sweep, calibration included, N times into OUT_DIR/rep1..repN, then one
# aggregate of medians over them (aggregate.py). A machine whose speed drifts on a scale of
# seconds makes one calibration and one run per row disagree for no reason in the model; the
# median over independent repetitions separates that noise from the model's error.
if [[ ! "$repeats" =~ ^[1-9][0-9]*$ ]]; then
  echo "sweep.sh: SWEEP_REPEATS='$repeats' must be a positive integer" >&2
  exit 2
fi
if (( repeats > 1 )); then
  dirs=()
  for ((i = 1; i <= repeats; i++)); do
    echo "repetition $i of $repeats" >&2
    SWEEP_REPEATS=1 SWEEP_NO_AGGREGATE=1 bash "$0" "$build" "$out/rep$i" ${3:+"$3"} || exit
    dirs+=("$out/rep$i")
  done
  python3 "$here/aggregate.py" "${dirs[@]}"
  exit
fi

# Terminal progress. Invariant: nothing but the plain log lines reaches stderr unless it is a
# terminal, and a drawn line is erased (by progress_clear, also on exit and on error) before
# anything else this script prints.
progress_tty=0
[[ -t 2 ]] && progress_tty=1
progress_drawn=0
# "42 s", "2 min 05 s", "1 h 02 min" from whole seconds, as core/progress.hpp writes durations.
format_duration() {
  local s=$1
  if (( s < 60 )); then
    printf '%d s' "$s"
  elif (( s < 3600 )); then
    printf '%d min %02d s' $(( s / 60 )) $(( s % 60 ))
  else
    local total_min=$(( (s + 30) / 60 ))
    printf '%d h %02d min' $(( total_min / 60 )) $(( total_min % 60 ))
  fi
}
# progress_row I N TEXT START_S: row I of N (1-based) is about to run; START_S ($SECONDS) is when
# row 1 started. The line is drawn between rows only (elapsed is as of this row's start). The
# ETA assumes the rate so far: elapsed * (N - done) / done with done = I - 1; "?" before row 2.
progress_row() {
  local i=$1 n=$2 text=$3 start=$4
  (( progress_tty )) || return 0
  local elapsed=$(( SECONDS - start )) done=$(( i - 1 )) eta='?'
  (( done > 0 )) && eta=$(format_duration $(( elapsed * (n - done) / done )))
  printf '\r\033[Krow %d/%d: %s, elapsed %s, ETA %s' "$i" "$n" "$text" "$(format_duration "$elapsed")" "$eta" >&2
  progress_drawn=1
}
progress_clear() {
  if (( progress_drawn )); then
    printf '\r\033[K' >&2
    progress_drawn=0
  fi
}
trap progress_clear EXIT

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

read -r -a ps_list <<< "$ps"
read -r -a lengths_list <<< "$lengths"
rows=$(( ${#ps_list[@]} * ${#lengths_list[@]} * 3 * 2 ))  # P x L x 3 schemes x 2 kernels: the loops below
row=0
rows_start=$SECONDS
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
        row=$(( row + 1 ))
        if (( progress_tty )); then
          progress_row "$row" "$rows" "P=$P L=$L $scheme $kernel" "$rows_start"
        else
          echo "run $tag" >&2
        fi
        mpirun -np "$P" "${mpirun_flags[@]}" "$ringplan" run "$plan" --scope attention --iters "$iters" --warmup "$warmup" \
          --format json --profile "$profile" > "$out/run_$tag.json"
      done
    done
  done
done
progress_clear
[ -n "${SWEEP_NO_AGGREGATE:-}" ] || python3 "$here/aggregate.py" "$out"
