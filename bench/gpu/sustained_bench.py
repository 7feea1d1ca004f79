#!/usr/bin/env python3
"""Sustained GEMM rate of one GPU: does the rate of the first seconds (what gemm_bench.py measures,
and what a short calibration sees) hold for minutes, as in training, or does the card slow down
(power or thermal limit: the SM clock drops)?

For bf16 and (compute capability >= 8.9) FP8 e4m3, one GEMM of a training shape (Llama-3 8B MLP up
projection at 8192 tokens: M 8192, N 28672, K 4096) runs back to back for --seconds; the rate is
recorded per batch of about 0.5 s, with the SM clock, power draw and temperature that nvidia-smi
reports beside it (polled once per second in a thread). The result is checked against float32 on
sampled rows before the timing starts.

Reported per dtype: the rate of the first 3 s, of the last half, their ratio, and the clocks.
usage: sustained_bench.py [--seconds 40] [--json FILE]
"""
import argparse
import json
import subprocess
import sys
import threading
import time


def poll_smi(samples, stop):
    q = "clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active"
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout.strip().splitlines()[0]
            parts = [p.strip() for p in out.split(",")]
            samples.append(dict(t=time.time(), sm_mhz=float(parts[0]), power_w=float(parts[1]),
                                temp_c=float(parts[2]), throttle=parts[3]))
        except Exception as e:  # nvidia-smi missing or a field unsupported: keep timing anyway
            samples.append(dict(t=time.time(), error=str(e)))
        stop.wait(1.0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"SKIPPED: PyTorch not importable ({e})")
        return 0
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device visible to PyTorch")
        return 0
    dev = "cuda"
    props = torch.cuda.get_device_properties(0)
    m, n, k = 8192, 28672, 4096
    flops = 2.0 * m * n * k
    torch.manual_seed(0)
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * k ** -0.5
    runs = {"bf16": lambda: x @ w.t()}
    if props.major * 10 + props.minor >= 89 and hasattr(torch, "_scaled_mm"):
        x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
        one = torch.ones((), device=dev, dtype=torch.float32)
        runs["fp8_e4m3"] = lambda: torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    result = dict(device=props.name, shape=dict(m=m, n=n, k=k), seconds=a.seconds, runs={})
    for name, fn in runs.items():
        out = fn()
        rows = torch.randint(0, m, (64,), device=dev)
        ref = x[rows].float() @ w.float().t()
        err = ((out[rows].float() - ref).abs().max() / ref.abs().max()).item()
        bound = 2e-2 if name == "bf16" else 8e-2
        if not err <= bound:
            print(f"FAILED: {name}: max relative error {err:.3e} > {bound}")
            return 1
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        per = (time.perf_counter() - t0) / 10
        batch = max(1, int(0.5 / per))
        smi, stop = [], threading.Event()
        th = threading.Thread(target=poll_smi, args=(smi, stop), daemon=True)
        th.start()
        series = []
        start = time.perf_counter()
        while time.perf_counter() - start < a.seconds:
            b0 = time.perf_counter()
            for _ in range(batch):
                fn()
            torch.cuda.synchronize()
            b1 = time.perf_counter()
            series.append(dict(t=b1 - start, tflops=batch * flops / (b1 - b0) / 1e12))
        stop.set()
        th.join()
        first = [s["tflops"] for s in series if s["t"] <= 3.0] or [series[0]["tflops"]]
        last = [s["tflops"] for s in series if s["t"] >= a.seconds / 2]
        clocks = [s["sm_mhz"] for s in smi if "sm_mhz" in s]
        power = [s["power_w"] for s in smi if "power_w" in s]
        r = dict(max_rel_err=err, batch=batch, first3s_tflops=sum(first) / len(first),
                 last_half_tflops=sum(last) / len(last), series=series, smi=smi)
        r["sustained_over_first"] = r["last_half_tflops"] / r["first3s_tflops"]
        result["runs"][name] = r
        print(f"{name}: first 3 s {r['first3s_tflops']:.1f} TFLOP/s, last half {r['last_half_tflops']:.1f} "
              f"TFLOP/s, ratio {r['sustained_over_first']:.3f}; SM clock "
              f"{min(clocks) if clocks else float('nan'):.0f}..{max(clocks) if clocks else float('nan'):.0f} MHz, "
              f"power {min(power) if power else float('nan'):.0f}..{max(power) if power else float('nan'):.0f} W",
              flush=True)
        if smi:
            print("  nvidia-smi (t, MHz, W, C, throttle):",
                  " ".join(f"{s['t'] - smi[0]['t']:.0f}s:{s.get('sm_mhz', 0):.0f}/{s.get('power_w', 0):.0f}/"
                           f"{s.get('temp_c', 0):.0f}/{s.get('throttle', '?')}" for s in smi[::5]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
