#!/usr/bin/env python3
"""Per-term prediction of the project's measured single-GPU PyTorch steps.

For each case of configs/validation/h200_torch_step (one H200, bench/gpu/torch_step_bench.py),
prints the cost model's forward, backward and optimizer time (`ringplan simulate --format json`)
beside the measured medians recorded in the JSON file the case's `source` names
(forward_ms, backward_ms, optimizer_ms, step_ms). The forward includes the loss, as the bench
times it (forward = embedding .. cross-entropy; backward = loss.backward()).

Usage: bench/planner/torch_step_terms.py [path/to/ringplan] [case folder]
Exit status 1 if a case names no measured file or a term is missing.
"""
import glob
import json
import os
import re
import subprocess
import sys

root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
ringplan = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build/cpu/cli/ringplan")
folder = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "configs/validation/h200_torch_step")

TERMS = [("forward", "forward_ms", ["forward_compute_s"]),
         ("backward", "backward_ms", ["backward_compute_s"]),
         ("optimizer", "optimizer_ms", ["optimizer_s"]),
         ("step", "step_ms", ["step_time_s"])]

print("| case | " + " | ".join(f"{t} predicted / measured ms (err)" for t, _, _ in TERMS) + " |")
print("|---|" + "---|" * len(TERMS))
for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
    text = open(path).read()
    m = re.search(r"\((configs/clusters/measured/[^)]+\.json)\)", text)
    if not m:
        sys.exit(f"{path}: its source names no configs/clusters/measured/*.json file")
    measured = json.load(open(os.path.join(root, m.group(1))))
    out = subprocess.run([ringplan, "simulate", path, "--format", "json"], capture_output=True, text=True)
    if out.returncode not in (0, 3):  # 3: does not fit; the report is still printed
        sys.exit(f"ringplan simulate {path} failed ({out.returncode}): {out.stderr}")
    time = json.loads(out.stdout)["time"]
    cells = []
    for _, key, parts in TERMS:
        if key not in measured:
            sys.exit(f"{m.group(1)}: no {key}")
        pred = 1e3 * sum(time[p] for p in parts)
        meas = measured[key]
        cells.append(f"{pred:.1f} / {meas:.1f} ({100.0 * (pred - meas) / meas:+.1f} %)")
    name = os.path.splitext(os.path.basename(path))[0]
    print(f"| {name} | " + " | ".join(cells) + " |")
