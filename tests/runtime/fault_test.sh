#!/usr/bin/env bash
# Fault test: runs the fault driver under mpirun with a short timeout and checks that
#   1. the job stops (non-zero exit) well before the stalled rank would have woken up,
#   2. it took at most MAX_S seconds (timeout + start-up slack), and
#   3. the output names the faulty rank (EXPECT, an extended regex).
# Usage: fault_test.sh MPIEXEC "MPI_FLAGS" NP DRIVER MODE VICTIM TIMEOUT_S MAX_S EXPECT
set -u
mpiexec=$1; flags=$2; np=$3; driver=$4; mode=$5; victim=$6; timeout_s=$7; max_s=$8; expect=$9
log=$(mktemp)
start=$(date +%s.%N)
# shellcheck disable=SC2086
RINGPLAN_TIMEOUT_S=$timeout_s timeout 120 "$mpiexec" -np "$np" $flags "$driver" "$mode" "$victim" >"$log" 2>&1
rc=$?
end=$(date +%s.%N)
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
cat "$log"
echo "fault_test: mode=$mode victim=$victim exit=$rc elapsed=${elapsed}s (limit ${max_s}s)"
status=0
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0 although rank $victim failed"; status=1; fi
if [ "$rc" -eq 124 ]; then echo "FAIL: the job hung (killed by timeout 120)"; status=1; fi
if awk -v e="$elapsed" -v m="$max_s" 'BEGIN { exit !(e > m) }'; then echo "FAIL: took ${elapsed}s > ${max_s}s"; status=1; fi
if ! grep -Eq "$expect" "$log"; then echo "FAIL: output does not match /$expect/"; status=1; fi
rm -f "$log"
[ $status -eq 0 ] && echo "fault_test: PASS"
exit $status
