#!/usr/bin/env python3
"""Weak-scaling table of validation cases: the same model, sequence length and per-GPU batch at
several GPU counts, measured against predicted.

Usage: ringplan validate DIR [--cluster P.yaml] --format json | python3 scripts/scaling_table.py

Cases are grouped by their name with the GPU count removed (`_g<N>_`); groups with one GPU count
are skipped. Per group and GPU count it prints the measured and predicted throughput per GPU and
the error, and per group the step time's growth per added node of 8 GPUs, measured and predicted:
step time per GPU = tokens per GPU per step / (tokens/s per GPU), read from the case files
(seq_len x global_batch / gpus). Only `tokens_per_s_per_device` cases are read.
"""
import json
import re
import sys

import yaml


def main():
    j = json.load(sys.stdin)
    groups = {}
    for c in j["cases"]:
        if c["metric"] != "tokens_per_s_per_device":
            continue
        m = re.search(r"_g(\d+)_", c["name"])
        if not m:
            continue
        with open(c["path"], encoding="utf-8") as f:
            case = yaml.safe_load(f)
        gpus = int(m.group(1))
        tokens = case["training"]["seq_len"] * case["training"]["global_batch"] / case["gpus"]
        key = c["name"][: m.start()] + c["name"][m.end() - 1:]
        groups.setdefault(key, []).append((gpus, c["published"], c["predicted"], c["error_pct"], tokens))
    print("| runs (GPU count left out) | GPUs | measured tokens/s/GPU | predicted | error % |")
    print("|---|---:|---:|---:|---:|")
    growth = []
    for key in sorted(groups):
        rows = sorted(groups[key])
        if len(rows) < 2:
            continue
        for gpus, meas, pred, err, _ in rows:
            print(f"| {key} | {gpus} | {meas:.0f} | {pred:.0f} | {err:+.2f} |")
        (g0, m0, p0, _, t0), (g1, m1, p1, _, t1) = rows[0], rows[-1]
        nodes = (g1 - g0) / 8.0
        growth.append((key, g0, g1, 1e3 * (t1 / m1 - t0 / m0) / nodes, 1e3 * (t1 / p1 - t0 / p0) / nodes,
                       100.0 * (m1 / m0 - 1.0), 100.0 * (p1 / p0 - 1.0)))
    print()
    print("| runs | GPUs | measured step growth, ms per added node | predicted | measured throughput change % | predicted % |")
    print("|---|---|---:|---:|---:|---:|")
    for key, g0, g1, gm, gp, dm, dp in growth:
        print(f"| {key} | {g0} -> {g1} | {gm:.2f} | {gp:.2f} | {dm:+.2f} | {dp:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
