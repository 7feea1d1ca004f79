#!/usr/bin/env python3
"""Joins bench_attention_cuda and sdpa_bench.py JSON into a markdown table (TFLOP/s and the ratio
ours / PyTorch) and checks the goal: >= 70% of PyTorch forward and backward at 8K tokens.

usage: report.py OURS.json SDPA.json [ORDER.json]   (prints markdown; exit 0 always: the table is the result)
ORDER.json: the same bench with --block-order head_major --primary-only (the baseline launch order,
each head's tiles in turn); its rates get columns of their own and the ratio tile-major / head-major
is printed.
FLOP model of both inputs: forward 4*b*h*n*n*d, halved for causal; backward 2.5x forward.
"ours fwd" is the forward named by OURS' "impl" (the library's default on that device: wgmma on
sm_90, else mma); every other timed forward (fwd_tflops_<name>) gets a column of its own, and
every other timed backward (bwd_tflops_<name>) likewise. "SMs busy" is the grid model's fraction
of SM time the primary kernels' launch order can fill (sms_busy_model; kernels/cuda/tile_schedule.hpp),
where the bench computed it: the rate is at most the per-SM rate times that fraction.
The goal is checked on the primary forward.
"""
import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"(cannot read {path}: {e})")
        return None


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__)
        return 2
    ours, ref = load(sys.argv[1]), load(sys.argv[2])
    order = load(sys.argv[3]) if len(sys.argv) == 4 else None
    if order and ours and (order.get("impl"), order.get("device")) != (ours.get("impl"), ours.get("device")):
        print(f"(ignoring {sys.argv[3]}: impl / device {order.get('impl')} / {order.get('device')} differ from "
              f"{ours.get('impl')} / {ours.get('device')})")
        order = None
    by_order = {(r["tokens"], r["causal"]): r for r in (order or {}).get("results", [])}
    if not ours:
        print("no results from bench_attention_cuda")
        return 0
    by_key = {(r["tokens"], r["causal"]): r for r in (ref or {}).get("results", [])}
    print(f"device: {ours.get('device')}; shapes: batch {ours['batch']}, heads {ours['heads']}, kv_heads "
          f"{ours['kv_heads']}, head_dim {ours['head_dim']}, {ours['type']}; ours: {ours.get('impl', 'n/a')}")
    if ref:
        print(f"baseline: torch {ref.get('torch')} scaled_dot_product_attention, GQA via {ref.get('gqa')}")
    print("FLOP model: fwd 4*b*h*n*n*d (x0.5 causal), bwd 2.5x fwd; medians of CUDA-event timings\n")
    def secondary(prefix):  # other timed implementations, in first-seen order
        names = []
        for r in ours["results"]:
            for key in r:
                if key.startswith(prefix) and key[len(prefix):] not in names:
                    names.append(key[len(prefix):])
        return names
    others, bwd_others = secondary("fwd_tflops_"), secondary("bwd_tflops_")
    modelled = any(r.get("sms_busy_model", {}).get("bwd", -1) >= 0 or r.get("sms_busy_model", {}).get("fwd", -1) >= 0
                   for r in ours["results"])
    print("| tokens | causal | ours fwd TF/s | torch fwd TF/s | fwd ratio | ours bwd TF/s | torch bwd TF/s | bwd ratio |"
          + "".join(f" {name} fwd TF/s |" for name in others) + "".join(f" {name} bwd TF/s |" for name in bwd_others)
          + (" SMs busy fwd / bwd (model) |" if modelled else "")
          + (f" {order.get('block_order', 'head_major')} fwd / bwd TF/s |" if by_order else ""))
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(others) + len(bwd_others) + int(modelled)
                                                            + int(bool(by_order))))
    goal = []
    for r in ours["results"]:
        t = by_key.get((r["tokens"], r["causal"]))
        fr = r["fwd_tflops"] / t["fwd_tflops"] if t else None
        br = r["bwd_tflops"] / t["bwd_tflops"] if t else None
        fmt = lambda x: f"{x:.1f}" if x is not None else "n/a"
        pct = lambda x: f"{100 * x:.0f}%" if x is not None else "n/a"
        alt = lambda r, k: by_order.get((r["tokens"], r["causal"]), {}).get(k)
        busy = lambda r, k: pct(r.get("sms_busy_model", {}).get(k)) if r.get("sms_busy_model", {}).get(k, -1) >= 0 else "n/a"
        print(f"| {r['tokens']} | {'yes' if r['causal'] else 'no'} | {fmt(r['fwd_tflops'])} | "
              f"{fmt(t['fwd_tflops'] if t else None)} | {pct(fr)} | {fmt(r['bwd_tflops'])} | "
              f"{fmt(t['bwd_tflops'] if t else None)} | {pct(br)} |"
              + "".join(f" {fmt(r.get('fwd_tflops_' + name))} |" for name in others)
              + "".join(f" {fmt(r.get('bwd_tflops_' + name))} |" for name in bwd_others)
              + (f" {busy(r, 'fwd')} / {busy(r, 'bwd')} |" if modelled else "")
              + (f" {fmt(alt(r, 'fwd_tflops'))} / {fmt(alt(r, 'bwd_tflops'))} |" if by_order else ""))
        if r["tokens"] == 8192 and fr is not None:
            goal.append((r["causal"], fr, br))
    print()

    def model_ratio(r, o):  # the grid model's busy fractions, where both runs computed them
        a, b = r.get("sms_busy_model", {}), o.get("sms_busy_model", {})
        if min(a.get("fwd", -1), a.get("bwd", -1), b.get("fwd", -1), b.get("bwd", -1)) <= 0:
            return ""
        return f" (grid model: fwd {a['fwd'] / b['fwd']:.3f}, bwd {a['bwd'] / b['bwd']:.3f})"
    for r in ours["results"]:
        o = by_order.get((r["tokens"], r["causal"]))
        if o and o.get("fwd_tflops") and o.get("bwd_tflops"):
            print(f"launch order {r['tokens']} {'causal' if r['causal'] else 'non-causal'}: "
                  f"{ours.get('block_order', 'tile_major')} / {order.get('block_order', 'head_major')} = "
                  f"fwd {r['fwd_tflops'] / o['fwd_tflops']:.3f}, bwd {r['bwd_tflops'] / o['bwd_tflops']:.3f}"
                  + model_ratio(r, o))
    for causal, fr, br in goal:
        ok = fr >= 0.7 and br >= 0.7
        print(f"goal at 8K ({'causal' if causal else 'non-causal'}): >= 70% of PyTorch fwd and bwd: "
              f"{'MET' if ok else 'NOT MET'} (fwd {100 * fr:.0f}%, bwd {100 * br:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
