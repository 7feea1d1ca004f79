#!/usr/bin/env bash
# End-to-end checks of `ringplan run` and `ringplan calibrate` under mpirun.
# Usage: cli_test.sh MPIEXEC "MPI_FLAGS" RINGPLAN PLAN_CP2 WORKDIR
#   1. a world size that does not match the plan's CP is refused before any work, saying so;
#   2. calibrate (2 ranks) writes a profile that `run` can load;
#   3. run --scope attention (2 ranks) with --format json --profile --trace: every field is
#      present and the trace holds complete ("X") events for both ranks and both lanes, and the
#      prediction beside them ("predicted rank r", pid 1000 + r), consistent with the run's JSON;
#   4. run --scope step (the default): a world size that does not match dp*tp*cp*pp is refused
#      (exit 2); with --check-parity --format json --trace every field is present, the parity
#      figures are those of a matching run, and the trace has integer lanes for both ranks and
#      the predicted steps, whose terms add up to the predicted step time;
#   5. the same plan with options.cp_comm allgather: run --scope attention runs all-gather CP
#      and says so, --trace is refused (exit 2, naming cp_comm), and run --scope step trains
#      with it and matches the one-process reference.
#   5b. the same with options.cp_comm alltoall (Ulysses): run --scope attention runs all-to-all CP,
#      its buffers are the predicted ones, --device cuda is refused naming the method, and run
#      --scope step (2 layers: the stash reuse and the re-exchange paths) matches one process.
#   5c. the same with options.cp_comm hybrid (cp_a2a_size 2 and 1: the all-to-all group with a
#      ring of one, and the ring of two groups of one): run --scope attention runs hybrid CP and
#      its buffers are the predicted ones; run --scope step matches one process.
#   6. a plan written by `simulate -o` (here with --cp-scheme striped) is run like one from
#      `plan -o`; run's JSON carries schema_version.
#   7. --check-parity of an interleaved pipeline (options a one-process run cannot take): the
#      reference drops them, trains the same model and matches.
set -u
mpiexec=$1; flags=$2; ringplan=$3; plan=$4; work=$5
mkdir -p "$work"
fail=0
check() { if ! grep -Eq "$2" "$1"; then echo "FAIL: $1 does not match /$2/"; cat "$1"; fail=1; fi; }

# shellcheck disable=SC2086
"$mpiexec" -np 1 $flags "$ringplan" run "$plan" --scope attention > "$work/mismatch.log" 2>&1
rc=$?
[ $rc -eq 2 ] || { echo "FAIL: world-size mismatch exited $rc, expected 2"; fail=1; }
check "$work/mismatch.log" "plan has cp=2 but mpirun started 1 rank; run mpirun -np 2"

# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" calibrate --tokens 32,64 --reps 1 --heads 4 --kv-heads 1 --head-dim 32 \
  -o "$work/profile.yaml" > "$work/calibrate.log" 2>&1 || { echo "FAIL: calibrate exited $?"; cat "$work/calibrate.log"; fail=1; }
check "$work/profile.yaml" "^peak_tflops:"
check "$work/profile.yaml" "^intra_node:"
# The step's linear-layer GEMMs are recorded; the materialised kernel's curve is written out.
check "$work/profile.yaml" "^# linear-layer GEMMs"
check "$work/profile.yaml" "^  materialized_attention: "

# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$plan" --scope attention --iters 2 --warmup 1 --format json --profile "$work/profile.yaml" \
  --trace "$work/trace.json" > "$work/run.json" 2> "$work/run.err" || { echo "FAIL: run exited $?"; cat "$work/run.err"; fail=1; }
for field in '"forward time \(slowest rank\)"' '"backward exposed comm"' '"predicted_s"' '"busy_max_over_mean"' \
             '"rss_peak_delta_bytes"' '"predicted_ring_buffer_bytes"' '"validates"'; do
  check "$work/run.json" "$field"
done
check "$work/trace.json" '"traceEvents"'
check "$work/trace.json" '"ph": "X"'
check "$work/trace.json" '"tid": 1'
check "$work/trace.json" '"pid": 1'
# The trace overlays the prediction: processes "measured rank r" (pid r) and "predicted rank r"
# (pid 1000 + r); per measured iteration one predicted ring (the event simulator's replay),
# starting with it, whose forward and backward end when the run's predicted phase times say.
python3 - "$work/trace.json" "$work/run.json" <<'PY' || fail=1
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
run = json.load(open(sys.argv[2]))
names = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
want = {0: "measured rank 0", 1: "measured rank 1", 1000: "predicted rank 0", 1001: "predicted rank 1"}
assert names == want, names
xs = [e for e in ev if e["ph"] == "X"]
meas = [e for e in xs if e["pid"] < 1000]
pred = [e for e in xs if e["pid"] >= 1000]
assert all(e["cat"] == "predicted" and e["tid"] in (0, 1) for e in pred)
iters = sorted({e["args"]["iteration"] for e in meas})
assert iters == [0, 1] and sorted({e["args"]["iteration"] for e in pred}) == iters, iters
rows = {r["name"]: r["predicted_s"] for r in run["rows"]}
end = None  # of the previous predicted iteration: the next starts with its measured one, or after it
for it in iters:
    t0 = min(e["ts"] for e in meas if e["args"]["iteration"] == it)
    mine = [e for e in pred if e["args"]["iteration"] == it]
    t0 = t0 if end is None else max(t0, end)
    assert abs(min(e["ts"] for e in mine) - t0) <= 1e-6 * max(1.0, t0), (min(e["ts"] for e in mine), t0)
    for pid in (1000, 1001):
        kernels = [e for e in mine if e["pid"] == pid and e["name"].startswith("forward kernel")]
        assert len(kernels) == 2, (pid, len(kernels))  # one per ring step (cp = 2, zigzag: no block masked)
    fwd = max(e["ts"] + e["dur"] for e in mine if e["name"].startswith("forward")) - t0
    bwd = max(e["ts"] + e["dur"] for e in mine if e["name"].startswith("backward")) - t0 - fwd
    for got, name in ((fwd, "forward time (slowest rank)"), (bwd, "backward time (slowest rank)")):
        assert abs(got / 1e6 - rows[name]) <= 0.02 * rows[name], (name, got / 1e6, rows[name])
    end = t0 + fwd + bwd
print(f"attention trace: {len(meas)} measured and {len(pred)} predicted events, {len(iters)} iterations")
PY

# shellcheck disable=SC2086
"$mpiexec" -np 1 $flags "$ringplan" run "$plan" > "$work/step_mismatch.log" 2>&1
rc=$?
[ $rc -eq 2 ] || { echo "FAIL: step world-size mismatch exited $rc, expected 2"; fail=1; }
check "$work/step_mismatch.log" "plan has dp=1 tp=1 cp=2 pp=1 = 2 ranks but mpirun started 1 rank; run mpirun -np 2"

# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$plan" --steps 2 --warmup 1 --check-parity --format json \
  --profile "$work/profile.yaml" --trace "$work/step_trace.json" > "$work/step.json" 2> "$work/step.err" \
  || { echo "FAIL: run --scope step exited $?"; cat "$work/step.err"; fail=1; }
for field in '"scope": "step"' '"losses"' '"reference_losses"' '"max_param_diff"' '"measured_median_s"' \
             '"terms"' '"name": "backward_compute"' '"predicted_bytes"' '"mesh"'; do
  check "$work/step.json" "$field"
done
# Parity of this CP2 run against one process: the float32 bound of tests/runtime/test_step_mpi.cpp.
python3 - "$work/step.json" <<'PY' || fail=1
import json, sys
j = json.load(open(sys.argv[1]))
worst = max(abs(a - b) / abs(b) for a, b in zip(j["losses"], j["reference_losses"]))
ok = len(j["losses"]) == 3 and worst <= 2e-6 and 0 <= j["max_param_diff"] <= 5e-4 and j["losses"][-1] < j["losses"][0]
# The gradient norm (clip_grad 1.0 by default) of every step, equal to the one-process run's.
norms = [abs(a - b) / b for a, b in zip(j["grad_norms"], j["reference_grad_norms"])]
ok = ok and len(j["grad_norms"]) == 3 and all(g > 0 for g in j["grad_norms"]) and max(norms) <= 2e-5
print(f"step parity: max rel loss diff {worst:.2e}, max param diff {j['max_param_diff']:.2e}, "
      f"max rel grad norm diff {max(norms):.2e}")
sys.exit(0 if ok else 1)
PY
check "$work/step_trace.json" '"name": "forward_compute"'
check "$work/step_trace.json" '"tid": 1'
check "$work/step_trace.json" '"pid": 1'
# The step trace overlays the prediction: per traced step (warm-up included) and rank one
# predicted step whose events are the cost model's terms, adding up to the predicted step time.
python3 - "$work/step_trace.json" "$work/step.json" <<'PY' || fail=1
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
run = json.load(open(sys.argv[2]))
names = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
assert names == {0: "measured rank 0", 1: "measured rank 1", 1000: "predicted rank 0", 1001: "predicted rank 1"}, names
xs = [e for e in ev if e["ph"] == "X"]
meas = [e for e in xs if e["pid"] < 1000]
pred = [e for e in xs if e["pid"] >= 1000]
steps = sorted({e["args"]["step"] for e in meas})
assert len(steps) == 3 and sorted({e["args"]["step"] for e in pred}) == steps, steps
terms = {t["name"]: t["predicted_s"] for t in run["terms"]}
step_s = run["step_time"]["predicted_s"]
for pid in (1000, 1001):
    end = None  # of the previous predicted step: the next starts with its measured one, or after it
    for s in steps:
        mine = sorted((e for e in pred if e["pid"] == pid and e["args"]["step"] == s), key=lambda e: e["ts"])
        t0 = min(e["ts"] for e in meas if e["args"]["step"] == s)
        t0 = t0 if end is None else max(t0, end)
        assert abs(mine[0]["ts"] - t0) <= 1e-6 * max(1.0, t0), (mine[0]["ts"], t0)
        total = sum(e["dur"] for e in mine) / 1e6
        assert abs(total - step_s) <= 1e-9 * step_s, (total, step_s)
        # end to end: no gap, no overlap
        for a, b in zip(mine, mine[1:]):
            assert abs(a["ts"] + a["dur"] - b["ts"]) <= 1e-6 * max(1.0, b["ts"]), (a, b)
        end = mine[-1]["ts"] + mine[-1]["dur"]
        by_name = {e["name"]: e["dur"] / 1e6 for e in mine}
        for name in ("forward_compute", "backward_compute", "optimizer"):
            assert abs(by_name[name] - terms[name]) <= 1e-9 * terms[name], (name, by_name[name], terms[name])
print(f"step trace: {len(meas)} measured and {len(pred)} predicted events, {len(steps)} steps")
PY
# A plan this host cannot hold (all 32 layers of Llama 3 8B at 8K tokens in float32) is refused
# before any allocation, with the way out.
root=$(cd "$(dirname "$0")/../.." && pwd)
cat > "$work/big.yaml" <<YAML
name: big
model: $root/configs/models/llama3_8b.yaml
cluster: $root/configs/clusters/local_cpu.yaml
training: {seq_len: 8192, global_batch: 1, dtype: fp32, optimizer: adam, causal: true}
gpus: 1
mesh: {dp: 1, tp: 1, cp: 1, pp: 1}
options: {micro_batch: 1}
YAML
# shellcheck disable=SC2086
"$mpiexec" -np 1 $flags "$ringplan" run "$work/big.yaml" > "$work/big.log" 2>&1
rc=$?
[ $rc -eq 2 ] || { echo "FAIL: an oversized step exited $rc, expected 2"; cat "$work/big.log"; fail=1; }
check "$work/big.log" "need about [0-9.]+ GiB per rank .*run fewer layers with --layers N"
# 5. cp_comm allgather: the same plan with the other CP method (the key added to its options).
sed 's/^    attention: flash$/    attention: flash\n    cp_comm: allgather/' "$plan" > "$work/plan_ag.yaml"
check "$work/plan_ag.yaml" "^    cp_comm: allgather$"
# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$work/plan_ag.yaml" --scope attention --iters 2 --warmup 1 --format json \
  --profile "$work/profile.yaml" > "$work/run_ag.json" 2> "$work/run_ag.err" \
  || { echo "FAIL: run --scope attention (allgather) exited $?"; cat "$work/run_ag.err"; fail=1; }
for field in '"cp_comm": "allgather"' '"forward time \(slowest rank\)"' '"backward exposed comm"' \
             '"predicted_ring_buffer_bytes"' 'cp_comm allgather'; do
  check "$work/run_ag.json" "$field"
done
# Measured all-gather buffers are exactly the predicted ones (float32 on the CPU runtime).
python3 - "$work/run_ag.json" <<'PY' || fail=1
import json, sys
j = json.load(open(sys.argv[1]))
m = j["memory"]
ok = m["measured_ring_buffer_bytes"] == m["predicted_ring_buffer_bytes"] > 0
print(f"allgather buffers: measured {m['measured_ring_buffer_bytes']}, predicted {m['predicted_ring_buffer_bytes']}")
sys.exit(0 if ok else 1)
PY
# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$work/plan_ag.yaml" --scope attention --iters 1 --trace "$work/ag_trace.json" \
  > "$work/ag_trace.log" 2>&1
rc=$?
[ $rc -eq 2 ] || { echo "FAIL: --trace with cp_comm allgather exited $rc, expected 2"; cat "$work/ag_trace.log"; fail=1; }
check "$work/ag_trace.log" "cp_comm allgather"
# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$work/plan_ag.yaml" --steps 2 --warmup 1 --check-parity --format json \
  --profile "$work/profile.yaml" > "$work/step_ag.json" 2> "$work/step_ag.err" \
  || { echo "FAIL: run --scope step (allgather) exited $?"; cat "$work/step_ag.err"; fail=1; }
python3 - "$work/step_ag.json" <<'PY' || fail=1
import json, sys
j = json.load(open(sys.argv[1]))
worst = max(abs(a - b) / abs(b) for a, b in zip(j["losses"], j["reference_losses"]))
ok = len(j["losses"]) == 3 and worst <= 2e-6 and 0 <= j["max_param_diff"] <= 5e-4
print(f"allgather step parity: max rel loss diff {worst:.2e}, max param diff {j['max_param_diff']:.2e}")
sys.exit(0 if ok else 1)
PY
# 5b. cp_comm alltoall: 8 heads and 2 KV heads per rank at CP 2 (split, no replication).
sed 's/^    attention: flash$/    attention: flash\n    cp_comm: alltoall/' "$plan" > "$work/plan_a2a.yaml"
check "$work/plan_a2a.yaml" "^    cp_comm: alltoall$"
# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$work/plan_a2a.yaml" --scope attention --iters 2 --warmup 1 --format json \
  --profile "$work/profile.yaml" > "$work/run_a2a.json" 2> "$work/run_a2a.err" \
  || { echo "FAIL: run --scope attention (alltoall) exited $?"; cat "$work/run_a2a.err"; fail=1; }
for field in '"cp_comm": "alltoall"' '"forward time \(slowest rank\)"' '"backward exposed comm"' \
             '"predicted_ring_buffer_bytes"' 'cp_comm alltoall'; do
  check "$work/run_a2a.json" "$field"
done
python3 - "$work/run_a2a.json" <<'PY' || fail=1
import json, sys
j = json.load(open(sys.argv[1]))
m = j["memory"]
ok = m["measured_ring_buffer_bytes"] == m["predicted_ring_buffer_bytes"] > 0
ok = ok and j["busy_max_over_mean"]["predicted"] == 1.0
print(f"alltoall buffers: measured {m['measured_ring_buffer_bytes']}, predicted {m['predicted_ring_buffer_bytes']}")
sys.exit(0 if ok else 1)
PY
# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$work/plan_a2a.yaml" --scope attention --iters 1 --device cuda \
  > "$work/a2a_cuda.log" 2>&1
rc=$?
[ $rc -eq 2 ] || { echo "FAIL: --device cuda with cp_comm alltoall exited $rc, expected 2"; cat "$work/a2a_cuda.log"; fail=1; }
check "$work/a2a_cuda.log" "cp_comm alltoall, which runs on the CPU kernels only"
# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$work/plan_a2a.yaml" --steps 2 --warmup 1 --check-parity --format json \
  --profile "$work/profile.yaml" > "$work/step_a2a.json" 2> "$work/step_a2a.err" \
  || { echo "FAIL: run --scope step (alltoall) exited $?"; cat "$work/step_a2a.err"; fail=1; }
python3 - "$work/step_a2a.json" <<'PY' || fail=1
import json, sys
j = json.load(open(sys.argv[1]))
worst = max(abs(a - b) / abs(b) for a, b in zip(j["losses"], j["reference_losses"]))
ok = len(j["losses"]) == 3 and worst <= 2e-6 and 0 <= j["max_param_diff"] <= 5e-4
print(f"alltoall step parity: max rel loss diff {worst:.2e}, max param diff {j['max_param_diff']:.2e}")
sys.exit(0 if ok else 1)
PY
# 5c. cp_comm hybrid.
for a2a in 2 1; do
  sed "s/^    attention: flash$/    attention: flash\n    cp_comm: hybrid\n    cp_a2a_size: $a2a/" "$plan" > "$work/plan_hy$a2a.yaml"
  check "$work/plan_hy$a2a.yaml" "^    cp_a2a_size: $a2a$"
  # shellcheck disable=SC2086
  "$mpiexec" -np 2 $flags "$ringplan" run "$work/plan_hy$a2a.yaml" --scope attention --iters 2 --warmup 1 --format json \
    --profile "$work/profile.yaml" > "$work/run_hy$a2a.json" 2> "$work/run_hy$a2a.err" \
    || { echo "FAIL: run --scope attention (hybrid $a2a) exited $?"; cat "$work/run_hy$a2a.err"; fail=1; }
  check "$work/run_hy$a2a.json" '"cp_comm": "hybrid"'
  check "$work/run_hy$a2a.json" "\"cp_a2a_size\": $a2a"
  python3 - "$work/run_hy$a2a.json" <<'PY' || fail=1
import json, sys
j = json.load(open(sys.argv[1]))
m = j["memory"]
ok = m["measured_ring_buffer_bytes"] == m["predicted_ring_buffer_bytes"] > 0
print(f"hybrid {j['cp_a2a_size']} buffers: measured {m['measured_ring_buffer_bytes']}, predicted {m['predicted_ring_buffer_bytes']}")
sys.exit(0 if ok else 1)
PY
  # shellcheck disable=SC2086
  "$mpiexec" -np 2 $flags "$ringplan" run "$work/plan_hy$a2a.yaml" --steps 2 --warmup 1 --check-parity --format json \
    --profile "$work/profile.yaml" > "$work/step_hy$a2a.json" 2> "$work/step_hy$a2a.err" \
    || { echo "FAIL: run --scope step (hybrid $a2a) exited $?"; cat "$work/step_hy$a2a.err"; fail=1; }
  python3 - "$work/step_hy$a2a.json" <<'PY' || fail=1
import json, sys
j = json.load(open(sys.argv[1]))
worst = max(abs(a - b) / abs(b) for a, b in zip(j["losses"], j["reference_losses"]))
ok = len(j["losses"]) == 3 and worst <= 2e-6 and 0 <= j["max_param_diff"] <= 5e-4
print(f"hybrid step parity: max rel loss diff {worst:.2e}, max param diff {j['max_param_diff']:.2e}")
sys.exit(0 if ok else 1)
PY
done
[ $fail -eq 0 ] && echo "cli_test: PASS"
# 6. simulate -o writes a plan file that run accepts.
"$ringplan" simulate "$plan" --cp-scheme striped -o "$work/sim_plan.yaml" > "$work/sim.log" 2>&1 \
  || { echo "FAIL: simulate -o exited $?"; cat "$work/sim.log"; fail=1; }
# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$work/sim_plan.yaml" --scope attention --iters 1 --warmup 0 --format json \
  > "$work/sim_run.json" 2> "$work/sim_run.err" || { echo "FAIL: run of simulate's plan exited $?"; cat "$work/sim_run.err"; fail=1; }
check "$work/sim_run.json" '"schema_version": 2'
check "$work/sim_run.json" 'striped causal'
# 7. Interleaved pipeline (pp 2, v 2) with --check-parity.
cat > "$work/exp_pp_v2.yaml" <<YAML
name: pp2_interleaved
model: {name: tiny_pp, layers: 4, hidden: 64, heads: 4, kv_heads: 2, head_dim: 16, ffn_hidden: 128, gated_mlp: true,
        vocab: 256, tied_embeddings: false}
cluster: $work/profile.yaml
training: {seq_len: 64, global_batch: 4, dtype: fp32, optimizer: adam, causal: true}
gpus: 2
mesh: {dp: 1, tp: 1, cp: 1, pp: 2}
options: {micro_batch: 1, interleave: 2}
YAML
# shellcheck disable=SC2086
"$mpiexec" -np 2 $flags "$ringplan" run "$work/exp_pp_v2.yaml" --steps 2 --warmup 1 --check-parity --format json \
  > "$work/step_pp_v2.json" 2> "$work/step_pp_v2.err" \
  || { echo "FAIL: run --scope step (pp 2, interleave 2, --check-parity) exited $?"; cat "$work/step_pp_v2.err"; fail=1; }
python3 - "$work/step_pp_v2.json" <<'PY' || fail=1
import json, sys
j = json.load(open(sys.argv[1]))
worst = max(abs(a - b) / abs(b) for a, b in zip(j["losses"], j["reference_losses"]))
ok = len(j["losses"]) == 3 and worst <= 2e-6 and 0 <= j["max_param_diff"] <= 5e-4 and j["params_compared"] > 0
print(f"interleaved pipeline step parity: max rel loss diff {worst:.2e}, max param diff {j['max_param_diff']:.2e}")
sys.exit(0 if ok else 1)
PY
exit $fail
