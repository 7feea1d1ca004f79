#!/usr/bin/env python3
"""Does a GEMM's shape, beyond its FLOPs, change its rate at the TP-split shapes plans use?

Reads bench/gpu/gemm_bench.py's JSON (measured cuBLAS GEMMs at the linear layers' shapes of
Llama-3 8B/70B at TP 1-8) and fits, by grid search on the mean |relative time error|, two models
of a GEMM's efficiency against the dtype's peak:
  flops:   eff = max * F / (F + half)                      (the cost model's matmul curve)
  k-ramp:  eff = max * F / (F + half) * K / (K + k0)       (short K loops amortise less)
  k,n:     eff = max * F / (F + half) * K / (K + k0) * N / (N + n0)
and prints each model's error overall and its mean signed time error by TP degree (negative:
the model predicts the GEMM faster than measured). Used for BENCHMARKS.md ("TP as it runs").
Usage: scripts/gemm_shape_check.py [GEMM.json] [--peak-bf16 TFLOPS] [--peak-fp8 TFLOPS]
"""
import argparse
import collections
import json

p = argparse.ArgumentParser()
p.add_argument("json", nargs="?", default="configs/clusters/measured/h200_2026-12-04_gemm.json")
# H100/H200 SXM dense peaks (NVIDIA H200 datasheet: BF16 989.4 TFLOPS, FP8 1978.9 TFLOPS dense).
p.add_argument("--peak-bf16", type=float, default=989.4)
p.add_argument("--peak-fp8", type=float, default=1978.9)
a = p.parse_args()
rows = json.load(open(a.json))["gemms"]


def errors(pts, peak, mx, half, k0, n0):
    out = []
    for r in pts:
        f = r["flops"]
        eff = mx * f / (f + half) * r["k"] / (r["k"] + k0) * r["n"] / (r["n"] + n0)
        out.append((f / (peak * eff) / (r["ms"] * 1e-3) - 1.0, r["tp"]))
    return out


def fit(pts, peak, k0s, n0s):
    best = None
    for k0 in k0s:
        for n0 in n0s:
            for mx in [x / 1000 for x in range(500, 900, 4)]:
                for half in [x * 1e9 for x in range(0, 40)]:
                    e = errors(pts, peak, mx, half, k0, n0)
                    m = sum(abs(x) for x, _ in e) / len(e)
                    if best is None or m < best[0]:
                        best = (m, mx, half, k0, n0, e)
    return best


for dtype, peak in (("bf16", a.peak_bf16 * 1e12), ("fp8_e4m3", a.peak_fp8 * 1e12)):
    pts = [r for r in rows if r["dtype"] == dtype]
    if not pts:
        continue
    print(f"{dtype}: {len(pts)} GEMMs from {a.json}")
    print("| model | max | half GFLOP | k0 | n0 | mean \\|err\\| % | max \\|err\\| % | bias TP1 | TP2 | TP4 | TP8 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, k0s, n0s in (("flops", [0], [0]), ("k-ramp", range(0, 400, 32), [0]),
                           ("k,n", range(0, 400, 64), range(0, 400, 64))):
        m, mx, half, k0, n0, e = fit(pts, peak, k0s, n0s)
        by = collections.defaultdict(list)
        for x, tp in e:
            by[tp].append(x)
        bias = " | ".join("{:+.1f}".format(100 * sum(v) / len(v)) for _, v in sorted(by.items()))
        print(f"| {name} | {mx:.3f} | {half / 1e9:.0f} | {k0} | {n0} | {100 * m:.2f} | "
              f"{100 * max(abs(x) for x, _ in e):.1f} | {bias} |")
    print()
