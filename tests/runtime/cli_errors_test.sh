#!/usr/bin/env bash
# Bad input and unwritable outputs of `ringplan run` / `ringplan calibrate` under mpirun: each
# must end at once (no measurement, no hang) with the stated exit code and a message naming
# the flag or variable and what is valid.
# Usage: cli_errors_test.sh MPIEXEC "MPI_FLAGS" RINGPLAN PLAN_CP2 WORKDIR
#   exit 2: --timeout -1/0/nan, RINGPLAN_TIMEOUT_S=inf/-1, --threads 0/1000, calibrate --batch
#           2^62, calibrate --plan with under 16 rows per rank, --trace or -o into a missing
#           folder (rank 0's check reaches every rank);
#           a plan whose head_dim or micro_batch no host holds, a micro_batch that does not divide
#           the batch, a symbolic link loop as the plan;
#   exit 0: run --format json of a plan whose path is not UTF-8; run --check-parity of packed documents;
#           run --scope attention of packed documents (their visible pairs);
#   exit 1: --trace /dev/full, calibrate -o /dev/full (the write fails after the measurement);
#   exit 0 with a note: a plan whose recorded prediction was typed over;
#   a run stopped mid-measurement leaves no earlier trace behind.
set -u
mpiexec=$1; flags=$2; ringplan=$3; plan=$4; work=$5
mkdir -p "$work"
fail=0
cal=(calibrate --tokens 32,64 --reps 1 --heads 4 --kv-heads 1 --head-dim 32)
# expect RC REGEX [ENV=VALUE] -- ARGS...: runs `mpirun -np 2 ringplan ARGS` (60 s at most).
expect() {
  local want=$1 regex=$2; shift 2
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  # shellcheck disable=SC2086
  env "${envs[@]}" timeout 60 "$mpiexec" -np 2 $flags "$ringplan" "$@" > "$work/out.log" 2>&1
  local rc=$?
  # Bad input is reported once, by rank 0 (every rank holds the same verdict).
  local errors
  errors=$(grep -c "ringplan: error:" "$work/out.log")
  if [ $rc -ne "$want" ] || ! grep -Eq -e "$regex" "$work/out.log"; then
    echo "FAIL: ringplan $* ${envs[*]}: exit $rc (want $want), output must match /$regex/:"; cat "$work/out.log"; fail=1
  elif [ "$want" -eq 2 ] && [ "$errors" -ne 1 ]; then
    echo "FAIL: ringplan $* ${envs[*]}: $errors error lines, want 1 (rank 0 alone reports bad input):"
    cat "$work/out.log"; fail=1
  else
    echo "ok: ringplan $* ${envs[*]} -> exit $rc"
  fi
}
step=(run "$plan" --steps 1 --warmup 0)
attn=(run "$plan" --scope attention --iters 1 --warmup 0)
for t in -1 0 nan; do
  expect 2 "ringplan: error: --timeout $t: must be a finite number of seconds in \(0, 1e\+06\]" -- "${step[@]}" --timeout $t
done
expect 2 "ringplan: error: --timeout nan: must be a finite number of seconds" -- "${cal[@]}" --timeout nan
expect 2 "RINGPLAN_TIMEOUT_S='inf': must be a finite number of seconds" RINGPLAN_TIMEOUT_S=inf -- "${step[@]}"
expect 2 "RINGPLAN_TIMEOUT_S='-1': must be a finite number of seconds" RINGPLAN_TIMEOUT_S=-1 -- "${cal[@]}"
expect 2 "ringplan: error: --threads 0: must be in 1\.\.256" -- "${cal[@]}" --threads 0
expect 2 "ringplan: error: --threads 1000: must be in 1\.\.256" -- "${attn[@]}" --threads 1000
expect 2 "ringplan: error: --batch 4611686018427387904: must be at most 65536" -- "${cal[@]}" --batch 4611686018427387904
expect 2 "ringplan: error: calibrate: block size 65536 tokens .* the limit is 16 GiB" -- "${cal[@]}" --tokens 32,65536
# A plan with fewer than 16 rows per rank leaves no linear-layer GEMM to measure: refused before
# the measurement, not by the fit after it.
sed 's/^    seq_len: 256$/    seq_len: 16/' "$plan" > "$work/few_rows.yaml"
expect 2 "calibrate --plan .*few_rows.yaml: its rows per rank .* are below 16" -- calibrate --plan "$work/few_rows.yaml"
expect 2 "ringplan: error: --trace /nonexistent/t.json: cannot write: folder '/nonexistent'" -- "${step[@]}" --trace /nonexistent/t.json
expect 2 "ringplan: error: --trace /nonexistent/t.json: cannot write: folder '/nonexistent'" -- "${attn[@]}" --trace /nonexistent/t.json
expect 2 "ringplan: error: -o /nonexistent/p.yaml: cannot write: folder '/nonexistent'" -- "${cal[@]}" -o /nonexistent/p.yaml
expect 1 "--trace /dev/full: cannot write: write: No space left on device" -- "${attn[@]}" --trace /dev/full
expect 1 "--trace /dev/full: cannot write: write: No space left on device" -- "${step[@]}" --trace /dev/full
expect 1 "-o /dev/full: cannot write: write: No space left on device" -- "${cal[@]}" -o /dev/full
# Sizes typed into a plan that no host can hold: refused before any allocation, at the plan's
# file:line:field with the largest value that fits (not std::bad_alloc, "internal error", exit 1).
sed 's/^    head_dim: 32$/    head_dim: 2147483648/' "$plan" > "$work/huge_head_dim.yaml"
sed 's/^    global_batch: 1$/    global_batch: 1073741824/; s/^    micro_batch: 1$/    micro_batch: 1073741824/' \
  "$plan" > "$work/huge_micro_batch.yaml"
sed 's/^    micro_batch: 1$/    micro_batch: 3/' "$plan" > "$work/bad_micro_batch.yaml"
hd="$work/huge_head_dim.yaml:12: experiment.model.head_dim: 2147483648 is too large to run here: .* GiB per rank.*valid: at most [0-9]+ on this host"
mb="$work/huge_micro_batch.yaml:39: experiment.options.micro_batch: 1073741824 is too large to run here: .*valid: at most [0-9]+ on this host"
expect 2 "$hd" -- run "$work/huge_head_dim.yaml" --scope attention --iters 1 --warmup 0
expect 2 "$hd" -- run "$work/huge_head_dim.yaml" --steps 1 --warmup 0
expect 2 "$mb" -- run "$work/huge_micro_batch.yaml" --scope attention --iters 1 --warmup 0
expect 2 "$mb" -- run "$work/huge_micro_batch.yaml" --steps 1 --warmup 0
expect 2 "bad_micro_batch.yaml:39: experiment.options.micro_batch: 3 does not divide the 1 sequence of each of the dp=1 replicas \(global batch 1\); valid: a divisor of 1" \
  -- run "$work/bad_micro_batch.yaml" --scope attention --iters 1 --warmup 0
# Packed documents: the attention scope masks them as the training step does (each rank of the
# per-document zigzag sees 8648 of the 100*101/2 + 156*157/2 = 17296 causal pairs, not half of
# 256*257/2 = 32896), and the training step matches the one-process step.
sed 's/^    causal: true$/    causal: true\n    documents: {lengths: [100, 156]}/' "$plan" > "$work/documents.yaml"
expect 0 '"forward_visible_pairs": 8648' -- run "$work/documents.yaml" --scope attention --iters 1 --warmup 0 --format json
expect 0 "parity" -- run "$work/documents.yaml" --steps 1 --warmup 0 --check-parity
# A symbolic link loop as the plan: bad input naming the link (not a filesystem_error, exit 1).
rm -f "$work/loop_a.yaml" "$work/loop_b.yaml"
ln -s "$work/loop_b.yaml" "$work/loop_a.yaml"; ln -s "$work/loop_a.yaml" "$work/loop_b.yaml"
expect 2 "loop_a.yaml: is a symbolic link loop" -- run "$work/loop_a.yaml" --steps 1
expect 2 "loop_a.yaml: plan file is a symbolic link loop" -- run "$work/loop_a.yaml" --scope attention --iters 1
# A plan path that is not UTF-8 (file names are bytes) in `run --format json`: printed with U+FFFD,
# not an abort (json type_error.316, "internal error", exit 1).
cp "$plan" "$work/plan_"$'\xff'".yaml"
expect 0 '"plan": ".*plan_.*\.yaml"' -- run "$work/plan_"$'\xff'".yaml" --scope attention --iters 1 --warmup 0 --format json
expect 0 '"plan": ".*plan_.*\.yaml"' -- run "$work/plan_"$'\xff'".yaml" --steps 1 --warmup 0 --format json
# A plan whose recorded prediction its layout no longer gives (a figure typed over) still runs,
# with a note naming the file:line and the figure.
sed 's/^  mfu: .*/  mfu: 7.5/' "$plan" > "$work/edited_mfu.yaml"
expect 0 "ringplan: note: .*edited_mfu.yaml:[0-9]+: prediction: .*mfu 7.5 \(its layout: " \
  -- run "$work/edited_mfu.yaml" --steps 1 --warmup 0
# A run stopped during its measurement leaves no trace, rather than an earlier run's that reads as
# complete: the earlier file is removed as the measurement starts (the new one is written whole
# at the end).
echo '{"traceEvents": []}' > "$work/earlier.json"
# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$plan" --steps 1000000 --warmup 0 --trace "$work/earlier.json" \
  > "$work/stopped.log" 2>&1 &
run_pid=$!
for _ in $(seq 1 120); do [ -e "$work/earlier.json" ] || break; sleep 0.5; done
kill -TERM $run_pid; wait $run_pid 2>/dev/null
if [ -e "$work/earlier.json" ]; then
  echo "FAIL: run --trace stopped mid-measurement left the earlier trace in place"; cat "$work/stopped.log"; fail=1
else
  echo "ok: run --trace stopped mid-measurement leaves no trace"
fi
[ $fail -eq 0 ] && echo "cli_errors_test: PASS"
exit $fail
