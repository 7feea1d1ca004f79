#!/usr/bin/env python3
"""What oversubscribed switch-group uplinks change in the planner's choice (cluster key
inter_node {group_nodes, oversubscription}; sim::uplink_slowdown).

For each experiment and each downlink : uplink ratio R out of switch groups of GROUP_NODES nodes,
this writes a copy of the experiment's cluster with the two keys set, runs `ringplan plan` on it,
and re-predicts the layout the non-blocking network's plan chose (`ringplan simulate` with that
mesh and those options) on the same oversubscribed network. It prints, per R: the chosen layout
and its step time, the non-blocking pick's step time there, and what the new pick saves over it.
Every figure comes from the ringplan binary given; nothing here is measured or fitted.

Usage: python3 bench/planner/switch_groups.py build/cpu/cli/ringplan [GROUP_NODES]
Exit status 1 if a run fails or a result is inconsistent (the planner's pick slower than the
non-blocking pick re-predicted on the same network, beyond the planner's ranking band).
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATIOS = (1, 2, 4, 8)

# (label, experiment file, training override or None): the shipped 405B 128K job, and the same
# model at 8K tokens, where pipeline parallelism is among the candidates.
EXPERIMENTS = (
    ("Llama 3 405B, 128K, 16,384 H100", "configs/experiments/llama3_405b_128k.yaml", None),
    ("Llama 3 405B, 8K, 16,384 H100", "configs/experiments/llama3_405b_128k.yaml",
     "  seq_len: 8192\n  global_batch_tokens: 16777216\n"),
)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(f"FAILED: {' '.join(cmd)}\n{r.stdout}{r.stderr}")
        sys.exit(1)
    return r.stdout


def layout_text(p):
    m, o = p["mesh"], p["options"]
    return (f"dp={m['dp']} tp={m['tp']} cp={m['cp']} pp={m['pp']} mb={o['micro_batch']} rc={o['recompute']} "
            f"zero={o['zero_stage']} v={o['interleave']} cp_comm={o['cp_comm']}")


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    binary = os.path.abspath(sys.argv[1])
    group_nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        cluster_src = open(os.path.join(ROOT, "configs/clusters/dgx_h100.yaml")).read()
        anchor = "  latency_us: 6             # initial estimate of the NCCL per-hop latency over InfiniBand\n"
        if anchor not in cluster_src:
            sys.stderr.write("FAILED: configs/clusters/dgx_h100.yaml no longer has the inter_node latency line\n")
            return 1
        for label, exp_path, training in EXPERIMENTS:
            exp_src = open(os.path.join(ROOT, exp_path)).read()
            exp_src = exp_src.replace("model: ../models/", f"model: {ROOT}/configs/models/")
            if training:
                start = exp_src.index("  seq_len:")
                end = exp_src.index("  dtype:")
                exp_src = exp_src[:start] + training + exp_src[end:]
            print(f"\n{label}: switch groups of {group_nodes} nodes (8 GPUs each)")
            print(f"{'R':>3}  {'chosen layout':<78} {'step s':>8}  {'flat pick s':>11}  {'saved':>6}")
            flat_pick = None
            for ratio in RATIOS:
                cluster = os.path.join(tmp, f"dgx_h100_r{ratio}.yaml")
                with open(cluster, "w") as f:
                    f.write(cluster_src.replace(
                        anchor, anchor + (f"  group_nodes: {group_nodes}\n  oversubscription: {ratio}\n" if ratio > 1 else "")))
                exp = os.path.join(tmp, f"exp_r{ratio}.yaml")
                with open(exp, "w") as f:
                    f.write(exp_src.replace("cluster: ../clusters/dgx_h100.yaml", f"cluster: {cluster}"))
                plan = json.loads(run([binary, "plan", exp, "--top", "1", "--format", "json"]))
                chosen = plan["chosen"]
                if flat_pick is None:
                    flat_pick = chosen
                # The non-blocking pick on this network: the same mesh and options, predicted.
                fixed = os.path.join(tmp, f"fixed_r{ratio}.yaml")
                body = exp_src.replace("cluster: ../clusters/dgx_h100.yaml", f"cluster: {cluster}")
                body = body[:body.index("search:")]
                opts = {k: flat_pick["options"][k] for k in
                        ("micro_batch", "recompute", "zero_stage", "sequence_parallel", "cp_scheme", "interleave",
                         "attention", "cp_comm", "dp_replicate")}
                if flat_pick["options"]["cp_comm"] == "hybrid":
                    opts["cp_a2a_size"] = flat_pick["options"]["cp_a2a_size"]
                with open(fixed, "w") as f:
                    f.write(body + "mesh: " + json.dumps(flat_pick["mesh"]) + "\noptions: " + json.dumps(opts) + "\n")
                again = json.loads(run([binary, "simulate", fixed, "--format", "json"]))
                saved = 100.0 * (1.0 - chosen["step_time_s"] / again["step_time_s"])
                band = 100.0 * plan["ranking"]["band"]
                if saved < -band:
                    print(f"INCONSISTENT: the plan's pick is {-saved:.2f} % slower than the non-blocking pick")
                    failed = True
                print(f"{ratio:>3}  {layout_text(chosen):<78} {chosen['step_time_s']:>8.2f}  "
                      f"{again['step_time_s']:>11.2f}  {saved:>5.1f}%")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
