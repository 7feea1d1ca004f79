#!/usr/bin/env python3
"""PyTorch baseline for bench/device_check.sh: times torch.nn.functional.scaled_dot_product_attention
forward and backward at the shapes of bench_attention_cuda (batch 1, 32 query heads, 8 KV heads,
head dim 128, bf16, causal and non-causal) with CUDA events, warm-up, and the median.

GQA: enable_gqa=True where PyTorch supports it (>= 2.5); otherwise K and V are expanded with
repeat_interleave OUTSIDE the timed region (the expansion's cost is not charged to PyTorch).
Backend: PyTorch's own choice (flash / cuDNN / memory-efficient); the JSON records the version.
FLOP model (same as ours): forward 4*b*h*n*n*d, halved for causal; backward 2.5x forward.

usage: sdpa_bench.py [--tokens 4096,8192,16384] [--warmup 5] [--iters 20] [--json FILE]
"""
import argparse
import json
import statistics
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,8192,16384")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json", default="")
    a = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"SKIPPED: PyTorch not importable ({e})")
        return 0
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device visible to PyTorch")
        return 0

    dev, dtype = "cuda", torch.bfloat16
    b, h, hkv, d = a.batch, a.heads, a.kv_heads, a.head_dim
    gqa_native = True
    results = []

    def sdpa(q, k, v, causal):
        nonlocal gqa_native
        if gqa_native:
            try:
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            except TypeError:
                gqa_native = False
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def median_ms(fn):
        """Median of per-call times of fn() between two events, after warm-up."""
        for _ in range(a.warmup):
            fn()
        times = []
        for _ in range(a.iters):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        return statistics.median(times)

    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name(0)}")
    print(f"{'tokens':>8} {'causal':>7} {'fwd_ms':>10} {'fwd_TF/s':>10} {'bwd_ms':>10} {'bwd_TF/s':>10}")
    for n in [int(x) for x in a.tokens.split(",")]:
        for causal in (False, True):
            torch.manual_seed(0)
            q = torch.randn(b, h, n, d, device=dev, dtype=dtype, requires_grad=True)
            k = torch.randn(b, hkv, n, d, device=dev, dtype=dtype, requires_grad=True)
            v = torch.randn(b, hkv, n, d, device=dev, dtype=dtype, requires_grad=True)
            dout = torch.randn(b, h, n, d, device=dev, dtype=dtype)
            sdpa(q, k, v, causal)  # settles gqa_native
            if not gqa_native:
                k = k.detach().repeat_interleave(h // hkv, dim=1).requires_grad_(True)
                v = v.detach().repeat_interleave(h // hkv, dim=1).requires_grad_(True)

            def fwd():
                return sdpa(q, k, v, causal)

            def bwd_timed(s, e):
                out = sdpa(q, k, v, causal)
                q.grad = k.grad = v.grad = None
                s.record()
                out.backward(dout)
                e.record()
                return True

            fwd_ms = median_ms(fwd)
            for _ in range(a.warmup):
                bwd_timed(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            times = []
            for _ in range(a.iters):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                bwd_timed(s, e)
                torch.cuda.synchronize()
                times.append(s.elapsed_time(e))
            bwd_ms = statistics.median(times)
            flops = 4.0 * b * h * n * n * d * (0.5 if causal else 1.0)
            r = {"tokens": n, "causal": causal, "fwd_ms": fwd_ms, "bwd_ms": bwd_ms,
                 "fwd_tflops": flops / (fwd_ms * 1e-3) / 1e12, "bwd_tflops": 2.5 * flops / (bwd_ms * 1e-3) / 1e12}
            results.append(r)
            print(f"{n:8d} {int(causal):7d} {fwd_ms:10.3f} {r['fwd_tflops']:10.1f} {bwd_ms:10.3f} {r['bwd_tflops']:10.1f}")
            del q, k, v, dout
            torch.cuda.empty_cache()

    if a.json:
        with open(a.json, "w") as f:
            json.dump({"impl": "torch_sdpa", "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
                       "gqa": "enable_gqa" if gqa_native else "repeat_interleave (untimed)",
                       "batch": b, "heads": h, "kv_heads": hkv, "head_dim": d, "type": "bf16",
                       "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
