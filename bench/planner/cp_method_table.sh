#!/usr/bin/env bash
# Which context-parallel method the planner picks, by sequence length and CP size, and why: for
# Llama-3-8B-like (TP 1) and Llama-3-70B-like (TP 8) models on DGX H100 nodes, each cell is
# `ringplan plan` on a fixed mesh dp=1 x TP x CP x pp=1 (every other option searched: recompute,
# ZeRO, sequence parallelism, CP scheme, micro-batch, cp_comm), global batch 4M tokens, and
# prints the chosen cp_comm with the other methods' predicted step time against it (+ = slower;
# hybrid as hybA, A its all-to-all group size: the chosen's, else the default for the mesh),
# "n/a" where the method cannot run the layout (the reason is in the plan) and "no fit" where no
# layout of the mesh fits in memory.
#
#   bench/planner/cp_method_table.sh BUILD_DIR [OUT_DIR]
set -euo pipefail
build=${1:?usage: cp_method_table.sh BUILD_DIR [OUT_DIR]}
out=${2:-$(mktemp -d)}
root=$(cd "$(dirname "$0")/../.." && pwd)
ringplan=$build/cli/ringplan
mkdir -p "$out"
seqs=(32768 65536 131072 262144 524288 1048576)
cps=(2 4 8 16 32)
for spec in "llama3_8b 1" "llama3_70b 8"; do
  read -r model tp <<< "$spec"
  for seq in "${seqs[@]}"; do
    for cp in "${cps[@]}"; do
      gpus=$((tp * cp))
      exp="$out/${model}_${seq}_cp${cp}.yaml"
      cat > "$exp" <<YAML
name: ${model}_${seq}_tp${tp}_cp${cp}
model: $root/configs/models/$model.yaml
cluster: $root/configs/clusters/dgx_h100.yaml
training: {seq_len: $seq, global_batch_tokens: 4194304, dtype: bf16, optimizer: adam, causal: true}
gpus: $gpus
mesh: {dp: 1, tp: $tp, cp: $cp, pp: 1}
YAML
      rc=0
      "$ringplan" plan "$exp" --format json > "${exp%.yaml}.json" 2> "${exp%.yaml}.err" || rc=$?
      echo "$rc" > "${exp%.yaml}.rc"
    done
  done
done

python3 - "$out" "${seqs[*]}" "${cps[*]}" <<'PY'
import json, sys
out, seqs, cps = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
short = {"ring": "ring", "allgather": "ag", "alltoall": "a2a", "hybrid": "hyb"}


def name(a):
    # hybrid with its all-to-all group size: "hyb4" = all-to-all in groups of 4, ring across them.
    return short[a["cp_comm"]] + (str(a["cp_a2a_size"]) if a["cp_comm"] == "hybrid" else "")


for model, tp in (("llama3_8b", 1), ("llama3_70b", 8)):
    print(f"\n{model} (TP {tp}, DGX H100, global batch 4M tokens): chosen cp_comm (other methods' step time vs it)\n")
    print("| seq | " + " | ".join(f"CP {c}" for c in cps) + " |")
    print("|---|" + "---|" * len(cps))
    for seq in seqs:
        cells = []
        for cp in cps:
            base = f"{out}/{model}_{seq}_cp{cp}"
            rc = int(open(base + ".rc").read())
            if rc == 3:
                cells.append("no fit")
                continue
            if rc != 0:
                cells.append(f"exit {rc}")
                continue
            j = json.load(open(base + ".json"))
            alts = j["cp_comm_alternatives"]
            me = alts[0]
            parts = []
            for a in alts[1:]:
                if "refused" in a:
                    parts.append(f"{name(a)} n/a")
                elif not a["fits"]:
                    parts.append(f"{name(a)} OOM")
                else:
                    parts.append(f"{name(a)} {100 * (a['step_time_s'] / me['step_time_s'] - 1):+.1f} %")
            cells.append(f"**{name(me)}** ({', '.join(parts)})")
        print(f"| {int(seq) // 1024}K | " + " | ".join(cells) + " |")
PY
