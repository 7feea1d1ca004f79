#!/usr/bin/env bash
# Ring vs all-gather vs all-to-all vs hybrid context parallelism, predicted vs measured, one
# attention layer.
#
#   bench/runtime/cp_comm_compare.sh BUILD_DIR OUT_DIR
#
# 1. For L in $CMP_LENGTHS and cp_comm in $CMP_COMMS (default ring allgather alltoall): plans an experiment whose search
#    allows one layout only (cpu_small's model, $CMP_CP GPUs (default 2), global batch 1, TP and PP
#    capped at 1: cp=$CMP_CP; sharding $CMP_SCHEME (default zigzag), flash, fp32, that cp_comm; hybrid
#    with $CMP_A2A, default 2)
# 2. Calibrates this machine with `mpirun -np 2 ringplan calibrate --plan` on the largest plan
#    (the model's head shape: query and KV heads, head dimension) at the block sizes the runs'
#    kernel calls use (L / 2CP and L / CP tokens for every L). The profile predicts; it is never
#    measured on the runs it predicts.
# 3. Runs each plan: `mpirun -np $CMP_CP ringplan run PLAN --scope attention --format json --profile PROFILE`.
# 4. Prints a markdown table of forward / backward time (slowest rank), measured median and
#    predicted, and the CP buffers measured vs predicted.
# Environment: CMP_LENGTHS (default "1024 2048 4096"), CMP_COMMS, CMP_CP (2), CMP_A2A (2), CMP_ITERS (5),
# CMP_WARMUP (1), CMP_SCHEME (zigzag; contiguous makes the ring and all-gather carry the causal
# imbalance that all-to-all, which splits heads, does not: methods the model tells apart).
set -euo pipefail
build=${1:?usage: cp_comm_compare.sh BUILD_DIR OUT_DIR}
out=${2:?usage: cp_comm_compare.sh BUILD_DIR OUT_DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
ringplan=$build/cli/ringplan
flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
cp=${CMP_CP:-2}
scheme=${CMP_SCHEME:-zigzag}
mkdir -p "$out"
lengths=${CMP_LENGTHS:-1024 2048 4096}
comms=${CMP_COMMS:-ring allgather alltoall}
for L in $lengths; do
  for comm in $comms; do
    cat > "$out/exp_${comm}_$L.yaml" <<YAML
name: cp_comm_${comm}_$L
model: $root/configs/models/tiny_gqa.yaml
cluster: $root/configs/clusters/local_cpu.yaml
training: {seq_len: $L, global_batch: 1, dtype: fp32, optimizer: adam, causal: true}
gpus: $cp
search: {micro_batch: [1], recompute: [none], zero_stage: [0], sequence_parallel: [false], cp_scheme: [$scheme],
         attention: [flash], cp_comm: [$comm], cp_a2a_size: [${CMP_A2A:-2}], max_tp: 1, max_pp: 1}
YAML
    "$ringplan" plan "$out/exp_${comm}_$L.yaml" -o "$out/plan_${comm}_$L.yaml" > /dev/null
    grep -q "cp: $cp" "$out/plan_${comm}_$L.yaml" || { echo "plan_${comm}_$L.yaml: expected cp=$cp" >&2; exit 1; }
  done
done
# The kernel shape the runs use (a profile measured on another head dimension predicts another
# rate): heads from the largest plan, blocks from every length.
largest=$(for L in $lengths; do echo "$L"; done | sort -n | tail -1)
first_comm=$(echo "$comms" | awk '{print $1}')
tokens=$(for L in $lengths; do echo $((L / (2 * cp))); echo $((L / cp)); done | sort -nu | paste -sd, -)
mpirun -np 2 "${flags[@]}" "$ringplan" calibrate --plan "$out/plan_${first_comm}_$largest.yaml" --tokens "$tokens" \
  -o "$out/profile.yaml" > "$out/calibrate.log" 2>&1
for L in $lengths; do
  for comm in $comms; do
    echo "run L=$L $comm" >&2
    mpirun -np "$cp" "${flags[@]}" "$ringplan" run "$out/plan_${comm}_$L.yaml" --scope attention \
      --iters "${CMP_ITERS:-5}" --warmup "${CMP_WARMUP:-1}" --format json --profile "$out/profile.yaml" \
      > "$out/run_${comm}_$L.json"
  done
done
python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
print("| L | cp_comm | fwd meas ms | fwd pred ms | fwd err | bwd meas ms | bwd pred ms | bwd err | fwd exposed comm meas / pred ms | CP buffers meas / pred MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
rows = []
for f in glob.glob(os.path.join(out, "run_*.json")):
    j = json.load(open(f))
    comm, L = os.path.basename(f)[4:-5].rsplit("_", 1)
    if comm == "hybrid":
        comm = f"hybrid a2a {j['cp_a2a_size']}"
    rows.append((int(L), ["ring", "allgather", "alltoall", "hybrid"].index(comm.split()[0]), comm, j))
for L, _, comm, j in sorted(rows):
    r = {x["name"]: x for x in j["rows"]}
    fw, bw, fe = r["forward time (slowest rank)"], r["backward time (slowest rank)"], r["forward exposed comm"]
    m = j["memory"]
    err = lambda x: f"{100 * (x['measured_median_s'] - x['predicted_s']) / x['predicted_s']:+.1f} %"
    print(f"| {L} | {comm} | {fw['measured_median_s']*1e3:.1f} | {fw['predicted_s']*1e3:.1f} | {err(fw)} | "
          f"{bw['measured_median_s']*1e3:.1f} | {bw['predicted_s']*1e3:.1f} | {err(bw)} | "
          f"{fe['measured_median_s']*1e3:.2f} / {fe['predicted_s']*1e3:.2f} | "
          f"{m['measured_ring_buffer_bytes']/2**20:.2f} / {m['predicted_ring_buffer_bytes']/2**20:.2f} |")
PY
