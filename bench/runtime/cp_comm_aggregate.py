#!/usr/bin/env python3
"""Aggregate repetitions of bench/runtime/cp_comm_compare.sh: error per method and ranking.

Usage: cp_comm_aggregate.py OUT_DIR [OUT_DIR ...]   (reads OUT_DIR/run_{comm}_{L}.json)

Each OUT_DIR is one whole repetition with its own calibration. For every (L, method) the table
gives the median over repetitions of the measured forward + backward time (slowest rank), of
the prediction and of the per-repetition error (each repetition's run against its own
profile), and the largest |error| of any repetition and phase. Then, per L, the methods ordered
by predicted and by measured median time, the spread of the measured times between the
fastest and slowest method, and the run-to-run spread of one method (max / min over
repetitions - 1): an order inside that spread is noise, not a ranking. Last, the ranking check:
every pair of methods at one L whose predicted times differ by more than the largest run-to-run
spread at that L (a difference the machine can resolve) must be ordered the same way by the
measured medians; pairs predicted closer than that are ties the check does not count. Exit
status 1 when a counted pair is ordered the other way.
"""
import glob
import json
import os
import statistics
import sys


def load(out_dir):
    runs = {}
    for path in glob.glob(os.path.join(out_dir, "run_*.json")):
        comm, length = os.path.basename(path)[4:-5].rsplit("_", 1)
        j = json.load(open(path))
        if comm == "hybrid":
            comm = f"hybrid a2a {j['cp_a2a_size']}"
        rows = {r["name"]: r for r in j["rows"]}
        fw, bw = rows["forward time (slowest rank)"], rows["backward time (slowest rank)"]
        runs[(int(length), comm)] = {
            "measured": fw["measured_median_s"] + bw["measured_median_s"],
            "predicted": fw["predicted_s"] + bw["predicted_s"],
            "max_phase_err": max(abs(x["measured_median_s"] - x["predicted_s"]) / x["predicted_s"] for x in (fw, bw)),
        }
    if not runs:
        sys.exit(f"{out_dir}: no run_*.json (run bench/runtime/cp_comm_compare.sh first)")
    return runs


def at_length(reps, keys, length):
    """Per method at one L: median predicted and measured time, and the largest run-to-run spread."""
    ks = [k for k in keys if k[0] == length]
    pred = {k[1]: statistics.median(r[k]["predicted"] for r in reps) for k in ks}
    meas = {k[1]: statistics.median(r[k]["measured"] for r in reps) for k in ks}
    noise = max(max(r[k]["measured"] for r in reps) / min(r[k]["measured"] for r in reps) - 1 for k in ks)
    return pred, meas, noise


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    reps = [load(d) for d in sys.argv[1:]]
    keys = sorted(set.intersection(*(set(r) for r in reps)))
    order = ["ring", "allgather", "alltoall", "hybrid"]
    keys.sort(key=lambda k: (k[0], order.index(k[1].split()[0]), k[1]))
    print(f"{len(reps)} repetitions; time = forward + backward, slowest rank; error = (measured - predicted) / predicted")
    print()
    print("| L | cp_comm | measured ms (median) | predicted ms (median) | error (median) | max phase |error|, any repetition | run-to-run spread |")
    print("|---|---|---:|---:|---:|---:|---:|")
    worst = 0.0
    for k in keys:
        m = [r[k]["measured"] for r in reps]
        p = [r[k]["predicted"] for r in reps]
        e = [(r[k]["measured"] - r[k]["predicted"]) / r[k]["predicted"] for r in reps]
        w = max(r[k]["max_phase_err"] for r in reps)
        worst = max(worst, w)
        print(f"| {k[0]} | {k[1]} | {statistics.median(m) * 1e3:.1f} | {statistics.median(p) * 1e3:.1f} | "
              f"{100 * statistics.median(e):+.1f} % | {100 * w:.1f} % | {100 * (max(m) / min(m) - 1):.1f} % |")
    print()
    print(f"largest |error| of any phase, method, length and repetition: {100 * worst:.1f} %")
    print()
    print("| L | predicted order (fastest first) | measured order (median) | predicted spread | measured spread | largest run-to-run spread |")
    print("|---|---|---|---:|---:|---:|")
    lengths = sorted({k[0] for k in keys})
    for length in lengths:
        pred, meas, noise = at_length(reps, keys, length)
        po = sorted(pred, key=pred.get)
        mo = sorted(meas, key=meas.get)
        print(f"| {length} | {' < '.join(po)} | {' < '.join(mo)} | "
              f"{100 * (max(pred.values()) / min(pred.values()) - 1):.1f} % | "
              f"{100 * (max(meas.values()) / min(meas.values()) - 1):.1f} % | {100 * noise:.1f} % |")
    print()
    counted = agreed = 0
    for length in lengths:
        pred, meas, noise = at_length(reps, keys, length)
        names = sorted(pred, key=pred.get)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                gap = pred[b] / pred[a] - 1  # a predicted faster by gap
                if gap <= noise:
                    continue
                counted += 1
                ok = meas[a] < meas[b]
                agreed += ok
                print(f"L {length}: {a} predicted {100 * gap:.1f} % faster than {b} (beyond the {100 * noise:.1f} % "
                      f"spread); measured {100 * (meas[b] / meas[a] - 1):+.1f} %: {'same order' if ok else 'OTHER ORDER'}")
    print(f"ranking check: {agreed} of {counted} pairs the model separates beyond the run-to-run spread are "
          f"ordered as measured")
    if agreed < counted:
        sys.exit(1)


if __name__ == "__main__":
    main()
