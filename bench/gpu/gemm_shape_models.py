#!/usr/bin/env python3
"""Does a GEMM's shape (M, N, K) predict its time better than its FLOPs alone?

Input: a `bench/gpu/gemm_bench.py` result (default: the H200 measurement the shipped H100/H200
profiles are fitted from, configs/clusters/measured/h200_2026-12-04_gemm.json): bf16 GEMMs at the
forward, data-gradient and weight-gradient shapes of Llama 3 8B / 70B linear layers at TP 1-8 and
1K-16K tokens, and FP8 (e4m3) forward GEMMs at the same shapes. Per dtype, each model below is
fitted by least squares on log(predicted / measured time) and scored on the GEMMs it was not
fitted to (5-fold, the folds fixed by the seed):

  flops      eff = max * F / (F + half)                        the cost model's curve (2 parameters)
  k-ramp     eff = max * F / (F + half) * K / (K + k0)         short K loops amortise less (3)
  separable  eff = max * M/(M+m0) * N/(N+n0) * K/(K+k0)          saturation in each dimension (4)
  waves      cuBLAS-like 128 x 256 tiles on the SMs, whole waves, K + k0 per tile, + t0 (3)
  roofline   t = F / (peak max) + bytes / (HBM bw) + t0          operands and result streamed once (3)

Prints each model's mean and max relative error, fitted and held out, its held-out mean signed
error by TP degree (negative: predicted faster than measured), and its three worst held-out
GEMMs. Pure Python (a Nelder-Mead search), no packages. Exit status 1 if the file holds no bf16
GEMM or a fit does not converge.

Usage: python3 bench/gpu/gemm_shape_models.py [GEMM_JSON] [--peak-tflops 989] [--peak-fp8-tflops 1979]
"""
import json
import math
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(ROOT, "configs/clusters/measured/h200_2026-12-04_gemm.json")
HBM_BYTES_PER_S = 4.8e12  # H200 SXM datasheet, 4.8 TB/s


def nelder_mead(f, x0, step, iters=4000, tol=1e-12):
    n = len(x0)
    pts = [list(x0)] + [[x0[j] + (step[j] if j == i else 0.0) for j in range(n)] for i in range(n)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = sorted(range(n + 1), key=lambda i: vals[i])
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) <= tol * (1.0 + abs(vals[0])):
            return pts[0], True
        centroid = [sum(p[j] for p in pts[:-1]) / n for j in range(n)]
        refl = [centroid[j] + (centroid[j] - pts[-1][j]) for j in range(n)]
        fr = f(refl)
        if fr < vals[0]:
            exp = [centroid[j] + 2.0 * (centroid[j] - pts[-1][j]) for j in range(n)]
            fe = f(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            con = [centroid[j] + 0.5 * (pts[-1][j] - centroid[j]) for j in range(n)]
            fc = f(con)
            if fc < vals[-1]:
                pts[-1], vals[-1] = con, fc
            else:
                for i in range(1, n + 1):
                    pts[i] = [pts[0][j] + 0.5 * (pts[i][j] - pts[0][j]) for j in range(n)]
                    vals[i] = f(pts[i])
    return pts[0], False


def models(peak):
    # Each: (name, initial parameters, initial steps, time(params, gemm) or None where a parameter
    # leaves its physical range).
    def flops(p, g):
        mx, half = p
        if not (0 < mx <= 1 and half >= 0):
            return None
        return g["flops"] / (peak * mx * g["flops"] / (g["flops"] + half * 1e12))

    def k_ramp(p, g):
        mx, half, k0 = p
        if not (0 < mx <= 1 and half >= 0 and k0 >= 0):
            return None
        f = g["flops"]
        return f / (peak * mx * f / (f + half * 1e12) * g["k"] / (g["k"] + k0 * 1e3))

    def separable(p, g):
        mx, m0, n0, k0 = p
        if not (0 < mx <= 1 and min(m0, n0, k0) >= 0):
            return None
        m, n, k = g["m"], g["n"], g["k"]
        return g["flops"] / (peak * mx * m / (m + m0 * 1e3) * n / (n + n0 * 1e3) * k / (k + k0 * 1e3))

    def waves(p, g, tm=128, tn=256, sms=132):
        mx, k0, t0 = p
        if not (0 < mx <= 1 and k0 >= 0 and t0 >= 0):
            return None
        tiles = math.ceil(g["m"] / tm) * math.ceil(g["n"] / tn)
        return math.ceil(tiles / sms) * 2.0 * tm * tn * (g["k"] + k0 * 1e3) * sms / (peak * mx) + t0 * 1e-6

    def roofline(p, g):
        mx, bw, t0 = p
        if not (0 < mx <= 1 and 0 < bw <= 1 and t0 >= 0):
            return None
        m, n, k = g["m"], g["n"], g["k"]
        return g["flops"] / (peak * mx) + 2.0 * (m * k + k * n + m * n) / (HBM_BYTES_PER_S * bw) + t0 * 1e-6

    return [("flops", [0.7, 0.01], [0.05, 0.005], flops),
            ("k-ramp", [0.7, 0.01, 0.1], [0.05, 0.005, 0.05], k_ramp),
            ("separable", [0.7, 0.1, 0.1, 0.1], [0.05, 0.05, 0.05, 0.05], separable),
            ("waves", [0.7, 0.1, 1.0], [0.05, 0.05, 1.0], waves),
            ("roofline", [0.7, 0.5, 1.0], [0.05, 0.1, 1.0], roofline)]


def fit(model, x0, step, gemms):
    def loss(p):
        total = 0.0
        for g in gemms:
            t = model(p, g)
            if t is None or t <= 0:
                return float("inf")
            total += math.log(t / (g["ms"] * 1e-3)) ** 2
        return total
    return nelder_mead(loss, x0, step)


def errors(model, p, gemms):
    return [100.0 * abs(model(p, g) / (g["ms"] * 1e-3) - 1.0) for g in gemms]


def evaluate(label, gemms, peak_tflops, folds_seed=0):
    rng = random.Random(folds_seed)
    order = list(range(len(gemms)))
    rng.shuffle(order)
    folds = [set(order[k::5]) for k in range(5)]
    tps = sorted({g["tp"] for g in gemms})
    print(f"\n{label}: {len(gemms)} GEMMs, peak {peak_tflops:g} TFLOP/s")
    print(f"{'model':<10} {'params':>6}  {'fitted mean':>11} {'max':>7}  {'held out mean':>13} {'max':>7}  "
          + "  ".join(f"{'TP ' + str(t):>7}" for t in tps))
    ok = True
    for name, x0, step, model in models(peak_tflops * 1e12):
        p, converged = fit(model, x0, step, gemms)
        ok = ok and converged
        e = errors(model, p, gemms)
        held, signed = [], []
        for test in folds:
            pk, conv_k = fit(model, x0, step, [g for i, g in enumerate(gemms) if i not in test])
            ok = ok and conv_k
            tested = [g for i, g in enumerate(gemms) if i in test]
            held += errors(model, pk, tested)
            signed += [(model(pk, g) / (g["ms"] * 1e-3) - 1.0, g) for g in tested]
        bias = []
        for t in tps:
            at = [r for r, g in signed if g["tp"] == t]
            bias.append(100.0 * sum(at) / len(at))
        print(f"{name:<10} {len(x0):>6}  {sum(e) / len(e):>10.2f}% {max(e):>6.1f}%  "
              f"{sum(held) / len(held):>12.2f}% {max(held):>6.1f}%  " + "  ".join(f"{b:>+6.1f}%" for b in bias))
        signed.sort(key=lambda w: -abs(w[0]))
        print("           worst held out: " + "; ".join(
            f"{g['model']} TP {g['tp']} {g['gemm']} {g['pass_']} M {g['m']} N {g['n']} K {g['k']} {100 * r:+.0f}%"
            for r, g in signed[:3]))
    return ok


def main():
    args = [a for a in sys.argv[1:]]
    # H100/H200 SXM dense peaks (datasheet, with sparsity: bf16 1,979, FP8 3,958 TFLOP/s).
    peaks = {"--peak-tflops": 989.0, "--peak-fp8-tflops": 1979.0}
    for flag in list(peaks):
        if flag in args:
            i = args.index(flag)
            peaks[flag] = float(args[i + 1])
            del args[i:i + 2]
    path = args[0] if args else DEFAULT
    data = json.load(open(path))
    bf16 = [g for g in data["gemms"] if g["dtype"] == "bf16"]
    fp8 = [g for g in data["gemms"] if g["dtype"].startswith("fp8")]
    if not bf16:
        print(f"FAILED: no bf16 GEMM in {path}")
        return 1
    print(f"{os.path.relpath(path, ROOT)} ({data.get('device', '?')})")
    ok = evaluate("bf16", bf16, peaks["--peak-tflops"])
    if fp8:
        ok = evaluate("fp8 (e4m3)", fp8, peaks["--peak-fp8-tflops"]) and ok
    if not ok:
        print("FAILED: a fit did not converge")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
