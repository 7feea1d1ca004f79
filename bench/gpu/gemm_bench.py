#!/usr/bin/env python3
"""GEMM and HBM rates of one GPU at the shapes ringplan's plans run, through PyTorch (cuBLAS/cuBLASLt).

Why: the cost model times every linear layer as flops / (peak * matmul.at(flops)), where
matmul.at(x) = max * x / (x + half) and x is the forward FLOPs of ONE GEMM (per layer, per
micro-batch, per rank; sim/cost_model.cpp gemm_s). This script measures that curve on the card
instead of estimating it: it times the three GEMMs of a linear layer (forward Y = X W^T, backward
dX = dY W and dW = dY^T X) for the linear layers of Llama-3-8B- and 70B-shaped models (QKV with
GQA, attention out, gated MLP up, MLP down, vocabulary) split by TP in {1, 2, 4, 8} at several
token counts per rank, in bf16 (fp32 accumulation, cuBLAS's default for torch.matmul) and, where
the card has FP8 tensor cores (compute capability >= 8.9), the forward in FP8 e4m3 through
torch._scaled_mm. Then the device-to-device copy rate of a large buffer (HBM, read + write).

Each GEMM's result is checked against a float32 product on sampled rows before it is timed (a
benchmark that times a wrong product reports nothing). Timing: CUDA events around `reps` calls
after warm-up, reps chosen so one measurement lasts about 20 ms; the median of 5 such
measurements. FLOPs = 2 M N K.

usage: gemm_bench.py [--json FILE] [--tokens 1024,4096,16384] [--tp 1,2,4,8] [--quick]
"""
import argparse
import json
import statistics
import sys

MODELS = {
    # name: hidden, ffn_hidden, heads, kv_heads, head_dim, vocab (Llama 3 model cards)
    "llama3_8b": (4096, 14336, 32, 8, 128, 128256),
    "llama3_70b": (8192, 28672, 64, 8, 128, 128256),
}


def layer_gemms(model, tp):
    """(name, in_features K, out_features N) of each linear layer on one TP rank."""
    h, ffn, q, kv, d, vocab = MODELS[model]
    return [
        # KV heads are replicated when TP > kv_heads (Megatron), so a rank holds at least one.
        ("qkv", h, (q // tp + 2 * max(kv // tp, 1)) * d),
        ("attn_out", q * d // tp, h),
        ("mlp_up", h, 2 * ffn // tp),
        ("mlp_down", ffn // tp, h),
        ("logits", h, vocab // tp),
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="1024,4096,16384")
    ap.add_argument("--tp", default="1,2,4,8")
    ap.add_argument("--json", default="")
    ap.add_argument("--quick", action="store_true", help="one model, TP 1 and 8, fewer token counts")
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
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    fp8 = props.major * 10 + props.minor >= 89 and hasattr(torch, "_scaled_mm")
    tokens_list = [int(t) for t in a.tokens.split(",")]
    tps = [int(t) for t in a.tp.split(",")]
    models = list(MODELS)
    if a.quick:
        models, tps, tokens_list = ["llama3_8b"], [1, 8], [1024, 8192]

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def time_ms(fn):
        fn()
        torch.cuda.synchronize()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        once = max(start.elapsed_time(stop), 1e-3)
        reps = max(1, min(200, int(20.0 / once)))
        samples = []
        for _ in range(5):
            start.record()
            for _ in range(reps):
                fn()
            stop.record()
            stop.synchronize()
            samples.append(start.elapsed_time(stop) / reps)
        return statistics.median(samples)

    def check(out, a_mat, b_mat, label):
        """out = a_mat @ b_mat on 64 sampled rows, against float32, relative to the largest entry."""
        rows = torch.randint(0, a_mat.shape[0], (64,), device=dev)
        ref = a_mat[rows].float() @ b_mat.float()
        got = out[rows].float()
        err = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
        bound = 2e-2 if out.dtype == torch.bfloat16 else 8e-2
        if not err <= bound:
            raise SystemExit(f"FAILED: {label}: max relative error {err:.3e} > {bound}")
        return err

    results = []
    print(f"{'model':<11} {'tp':>2} {'tokens':>6} {'gemm':<9} {'pass':<4} {'M':>6} {'N':>6} {'K':>6} "
          f"{'GFLOP':>8} {'ms':>8} {'TF/s':>7}")
    for model in models:
        for tp in tps:
            for n_tok in tokens_list:
                for name, k_in, n_out in layer_gemms(model, tp):
                    x = torch.randn(n_tok, k_in, device=dev, dtype=torch.bfloat16)
                    w = torch.randn(n_out, k_in, device=dev, dtype=torch.bfloat16) * (k_in ** -0.5)
                    dy = torch.randn(n_tok, n_out, device=dev, dtype=torch.bfloat16)
                    passes = [
                        ("fwd", lambda: x @ w.t(), x, w.t(), (n_tok, n_out, k_in)),
                        ("bwd_dx", lambda: dy @ w, dy, w, (n_tok, k_in, n_out)),
                        ("bwd_dw", lambda: dy.t() @ x, dy.t(), x, (n_out, k_in, n_tok)),
                    ]
                    for pname, fn, am, bm, (m, n, k) in passes:
                        err = check(fn(), am, bm, f"{model} tp{tp} {n_tok} {name} {pname}")
                        ms = time_ms(fn)
                        flops = 2.0 * m * n * k
                        results.append(dict(model=model, tp=tp, tokens=n_tok, gemm=name, dtype="bf16",
                                            pass_=pname, m=m, n=n, k=k, flops=flops, ms=ms,
                                            tflops=flops / ms / 1e9, max_rel_err=err))
                        print(f"{model:<11} {tp:>2} {n_tok:>6} {name:<9} {pname:<6} {m:>6} {n:>6} {k:>6} "
                              f"{flops / 1e9:>8.1f} {ms:>8.3f} {flops / ms / 1e9:>7.1f}", flush=True)
                    if fp8:
                        x8 = x.to(torch.float8_e4m3fn)
                        w8 = w.to(torch.float8_e4m3fn)
                        one = torch.ones((), device=dev, dtype=torch.float32)

                        def f8():
                            return torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
                        err = check(f8(), x8, w8.t(), f"{model} tp{tp} {n_tok} {name} fp8")
                        ms = time_ms(f8)
                        flops = 2.0 * n_tok * n_out * k_in
                        results.append(dict(model=model, tp=tp, tokens=n_tok, gemm=name, dtype="fp8_e4m3",
                                            pass_="fwd", m=n_tok, n=n_out, k=k_in, flops=flops, ms=ms,
                                            tflops=flops / ms / 1e9, max_rel_err=err))
                        print(f"{model:<11} {tp:>2} {n_tok:>6} {name:<9} fp8    {n_tok:>6} {n_out:>6} {k_in:>6} "
                              f"{flops / 1e9:>8.1f} {ms:>8.3f} {flops / ms / 1e9:>7.1f}", flush=True)
                    del x, w, dy
    # HBM: device-to-device copy of a 4 GiB buffer (read 4 GiB + write 4 GiB per copy).
    n_bytes = 4 << 30
    src = torch.empty(n_bytes, dtype=torch.uint8, device=dev).random_(0, 255)
    dst = torch.empty_like(src)
    dst.copy_(src)
    if not torch.equal(dst[:: 1 << 20], src[:: 1 << 20]):
        raise SystemExit("FAILED: copy check")
    ms = time_ms(lambda: dst.copy_(src))
    copy_gbps = 2.0 * n_bytes / ms / 1e6
    print(f"HBM copy: {n_bytes >> 30} GiB in {ms:.3f} ms: {copy_gbps:.0f} GB/s (read + write)")
    out = dict(device=props.name, sm=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
               torch=torch.__version__, cuda=torch.version.cuda, fp8=fp8, gemms=results,
               hbm_copy_gbps=copy_gbps)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
