#!/usr/bin/env python3
"""Aggregate `ringplan run --format json` files of bench/runtime/sweep.sh into markdown.

Usage: aggregate.py OUT_DIR   (reads OUT_DIR/run_P{P}_L{L}_{scheme}_{kernel}.json)

Definitions (the same as `ringplan run`):
  time      slowest rank's phase time per iteration, median over iterations
  error %   100 * (measured - predicted) / predicted
  busy      per-rank median of (forward + backward) kernel time; max/mean over ranks
  parallel efficiency  T(1 rank, whole sequence) / (P * T(P)), T = forward + backward time
  memory    tracked = exact bytes of the run's buffers; RSS = VmHWM rise during the run
"""
import glob
import json
import os
import re
import sys


def load(out_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, "run_*.json"))):
        m = re.match(r"run_P(\d+)_L(\d+)_(\w+?)_(flash|materialized)\.json", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            try:
                j = json.load(f)
            except json.JSONDecodeError:
                print(f"skipping {path}: not JSON (the run failed?)", file=sys.stderr)
                continue
        r = {"P": int(m.group(1)), "L": int(m.group(2)), "scheme": m.group(3), "kernel": m.group(4), "json": j}
        by_name = {x["name"]: x for x in j["rows"]}
        for phase in ("forward", "backward"):
            t = by_name[f"{phase} time (slowest rank)"]
            r[f"{phase}_meas"] = t["measured_median_s"]
            r[f"{phase}_pred"] = t["predicted_s"]
            r[f"{phase}_min"] = t["measured_min_s"]
            r[f"{phase}_max"] = t["measured_max_s"]
        r["total_meas"] = r["forward_meas"] + r["backward_meas"]
        r["total_pred"] = r["forward_pred"] + r["backward_pred"]
        rows.append(r)
    return rows


def err(meas, pred):
    return 100.0 * (meas - pred) / pred if pred > 0 else float("nan")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    rows = load(out_dir)
    if not rows:
        sys.exit(f"no run_*.json files in {out_dir}")
    print("### Predicted vs measured (one attention layer, forward + backward, slowest rank)\n")
    print("| P | L | scheme | kernel | fwd meas ms (min..max) | fwd pred ms | fwd err | bwd meas ms (min..max) | bwd pred ms | bwd err | total err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    abs_errs = {"forward": [], "backward": [], "total": []}
    for r in rows:
        fe, be, te = err(r["forward_meas"], r["forward_pred"]), err(r["backward_meas"], r["backward_pred"]), err(r["total_meas"], r["total_pred"])
        abs_errs["forward"].append(abs(fe))
        abs_errs["backward"].append(abs(be))
        abs_errs["total"].append(abs(te))
        print(f"| {r['P']} | {r['L']} | {r['scheme']} | {r['kernel']} | {r['forward_meas']*1e3:.1f} ({r['forward_min']*1e3:.1f}..{r['forward_max']*1e3:.1f}) | "
              f"{r['forward_pred']*1e3:.1f} | {fe:+.1f}% | {r['backward_meas']*1e3:.1f} ({r['backward_min']*1e3:.1f}..{r['backward_max']*1e3:.1f}) | "
              f"{r['backward_pred']*1e3:.1f} | {be:+.1f}% | {te:+.1f}% |")
    print()
    for k, v in abs_errs.items():
        within = sum(1 for e in v if e <= 10.0)
        print(f"- mean |error| {k}: {sum(v)/len(v):.1f}% over {len(v)} rows; rows within 10%: {within}/{len(v)}")

    print("\n### Load balance: busy max/mean over ranks (causal)\n")
    print("| P | L | scheme | kernel | measured | predicted |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["P"] < 2:
            continue
        b = r["json"]["busy_max_over_mean"]
        print(f"| {r['P']} | {r['L']} | {r['scheme']} | {r['kernel']} | {b['measured']:.3f} | {b['predicted']:.3f} |")

    print("\n### Parallel efficiency T(1)/(P*T(P)), T = forward + backward (slowest rank)\n")
    print("| P | L | scheme | kernel | T(P) ms | T(1) ms | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["P"] < 2:
            continue
        base = [x for x in rows if x["P"] == 1 and x["L"] == r["L"] and x["kernel"] == r["kernel"] and x["scheme"] == r["scheme"]]
        if not base:
            continue
        t1 = base[0]["total_meas"]
        print(f"| {r['P']} | {r['L']} | {r['scheme']} | {r['kernel']} | {r['total_meas']*1e3:.1f} | {t1*1e3:.1f} | {100*t1/(r['P']*r['total_meas']):.1f}% |")

    print("\n### Memory per rank: measured vs predicted attention terms\n")
    print("| P | L | kernel | scores meas MiB | scores pred MiB (O(L^2/P)) | ring bufs meas MiB | ring bufs pred MiB (O(L/P)) | tracked MiB | RSS rise MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    mib = 1024.0 * 1024.0
    seen = set()
    for r in rows:
        key = (r["P"], r["L"], r["kernel"])
        if key in seen:
            continue
        seen.add(key)
        m = r["json"]["memory"]
        print(f"| {r['P']} | {r['L']} | {r['kernel']} | {m['measured_scores_bytes']/mib:.2f} | {m['predicted_scores_bytes']/mib:.2f} | "
              f"{m['measured_ring_buffer_bytes']/mib:.2f} | {m['predicted_ring_buffer_bytes']/mib:.2f} | "
              f"{m['measured_tracked_max_bytes']/mib:.2f} | {m['measured_rss_peak_delta_max_bytes']/mib:.2f} |")


if __name__ == "__main__":
    main()
