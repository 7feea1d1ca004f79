#!/usr/bin/env python3
"""Aggregate `ringplan run --format json` files of bench/runtime/sweep.sh into markdown.

Usage: aggregate.py OUT_DIR [OUT_DIR ...]   (reads OUT_DIR/run_P{P}_L{L}_{scheme}_{kernel}.json)

With several OUT_DIRs (repetitions of the whole sweep, each with its own calibration:
SWEEP_REPEATS in sweep.sh), every row's error is computed per repetition (that repetition's
run against that repetition's profile) and the tables report the MEDIAN over repetitions of
errors, times and ratios, with the per-repetition total errors beside them. A machine whose
speed drifts between runs makes single repetitions disagree; the median shows the model's
error, the spread the machine's noise.

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
import statistics
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


def merge(runs):
    """Rows of several repetitions -> one row per (P, L, scheme, kernel) with medians.

    Errors are taken per repetition first (each run against its own repetition's profile),
    then the median; times are medians of the per-repetition medians."""
    keyed = {}
    for rows in runs:
        for r in rows:
            keyed.setdefault((r["P"], r["L"], r["scheme"], r["kernel"]), []).append(r)
    merged = []
    for key in sorted(keyed):
        reps = keyed[key]
        m = dict(reps[0])
        for f in ("forward_meas", "backward_meas", "total_meas", "forward_pred", "backward_pred", "total_pred",
                  "forward_min", "backward_min"):
            m[f] = statistics.median(x[f] for x in reps)
        m["forward_max"] = statistics.median(x["forward_max"] for x in reps)
        m["backward_max"] = statistics.median(x["backward_max"] for x in reps)
        for phase in ("forward", "backward", "total"):
            m[f"{phase}_err"] = statistics.median(err(x[f"{phase}_meas"], x[f"{phase}_pred"]) for x in reps)
        m["total_errs"] = [err(x["total_meas"], x["total_pred"]) for x in reps]
        m["busy"] = statistics.median(x["json"]["busy_max_over_mean"]["measured"] for x in reps)
        m["busy_pred"] = reps[0]["json"]["busy_max_over_mean"]["predicted"]
        merged.append(m)
    return merged


def main():
    out_dirs = sys.argv[1:] or ["."]
    runs = [load(d) for d in out_dirs]
    for d, rows in zip(out_dirs, runs):
        if not rows:
            sys.exit(f"no run_*.json files in {d}")
    rows = merge(runs)
    repeated = len(runs) > 1
    if repeated:
        print(f"Medians over {len(runs)} repetitions of the sweep ({', '.join(out_dirs)}), each with its own "
              "calibration; errors per repetition first, then the median.\n")
    print("### Predicted vs measured (one attention layer, forward + backward, slowest rank)\n")
    print("| P | L | scheme | kernel | fwd meas ms (min..max) | fwd pred ms | fwd err | bwd meas ms (min..max) | bwd pred ms | bwd err | total err |"
          + (" total err per repetition |" if repeated else ""))
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if repeated else ""))
    abs_errs = {"forward": [], "backward": [], "total": []}
    for r in rows:
        fe, be, te = r["forward_err"], r["backward_err"], r["total_err"]
        abs_errs["forward"].append(abs(fe))
        abs_errs["backward"].append(abs(be))
        abs_errs["total"].append(abs(te))
        print(f"| {r['P']} | {r['L']} | {r['scheme']} | {r['kernel']} | {r['forward_meas']*1e3:.1f} ({r['forward_min']*1e3:.1f}..{r['forward_max']*1e3:.1f}) | "
              f"{r['forward_pred']*1e3:.1f} | {fe:+.1f}% | {r['backward_meas']*1e3:.1f} ({r['backward_min']*1e3:.1f}..{r['backward_max']*1e3:.1f}) | "
              f"{r['backward_pred']*1e3:.1f} | {be:+.1f}% | {te:+.1f}% |"
              + (" " + " / ".join(f"{e:+.1f}%" for e in r["total_errs"]) + " |" if repeated else ""))
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
        print(f"| {r['P']} | {r['L']} | {r['scheme']} | {r['kernel']} | {r['busy']:.3f} | {r['busy_pred']:.3f} |")

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
