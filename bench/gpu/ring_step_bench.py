#!/usr/bin/env python3
"""One rank's ring steps of ring-flash-attention's zigzag and striped schemes, replayed on ONE GPU
without communication: how much of a ring step is the attention kernel and how much the merges
and gradient accumulations around it (issue #14: the published 8-GPU shares of ideal, zigzag
89.8 % and striped 82.6 %, are below what the cost model gives, 95.7 %; the question this answers
is whether the local work outside the kernels explains the gap, or the transfers and waits the
replay leaves out).

Shapes: ring-flash-attention's benchmark (benchmark/benchmark_kvpacked_func.py): batch 1, 32
query heads, 8 KV heads, head dim 128, bf16, causal, 8192 tokens per rank, 8 ranks. The replayed
rank is --rank (default 3, so that both kinds of later step occur: source rank before and after).

What each step runs, as zhuzilin/ring-flash-attention (zigzag_ring_flash_attn.py,
stripe_flash_attn.py, utils.py) does it, with PyTorch's flash SDPA ops
(aten._scaled_dot_product_flash_attention and its backward) in place of flash_attn's:
  zigzag forward: step 0 causal on the rank's two chunks; a step whose source rank precedes it:
    all queries against the source's first chunk, non-causal; else the second query chunk against
    both source chunks, non-causal, merged into the second half of the output (slice_).
  striped forward: a source rank <= this one: causal on the whole blocks; else q[:, 1:] against
    k[:, :-1] causal, merged into out[:, 1:] (slice_).
  merge: update_out_and_lse (TorchScript, as in utils.py): out - sigmoid(block_lse - lse) *
    (out - block_out) in float32, and the lse update.
  backward: the same calls' backward; dq accumulated in float32 (dq += or a half / shifted slice),
    dk and dv accumulated in float32 (full or half / shifted slices).
GQA: flash_attn takes 8 KV heads; PyTorch's flash op takes equal heads, so K and V are expanded to
32 heads once, outside the timed region, and each backward's dK, dV are summed back over the 4
query heads per KV head inside the kernel's share (flash_attn does that sum inside its call).

Checked before timing: the replayed rank's forward output and dQ against PyTorch's causal SDPA on
the whole 65536-token sequence (the rank's rows of it), bf16 bounds stated below. Times: CUDA
events, warm-up, median. Share of ideal = 8 x (one 8192-token causal call, forward + backward) /
(the rank's 8 steps, forward + backward): the README's definition, here without transfers.

usage: ring_step_bench.py [--ranks 8] [--tokens 8192] [--rank 3] [--warmup 3] [--iters 10] [--json FILE]
Exit status: 0 (also when PyTorch or a GPU is missing: SKIPPED), 1 when a check fails.
"""
import argparse
import json
import statistics
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per rank")
    ap.add_argument("--rank", type=int, default=3)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
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

    P, n, r = a.ranks, a.tokens, a.rank
    h, hkv, d = a.heads, a.kv_heads, a.head_dim
    if not (0 <= r < P) or n % 2 or h % hkv:
        print(f"bad arguments: rank {r} of {P}, tokens {n} (even), heads {h} / kv heads {hkv}")
        return 1
    rep = h // hkv
    half = n // 2
    dev, bf16, f32 = "cuda", torch.bfloat16, torch.float32
    scale = d ** -0.5
    aten = torch.ops.aten

    def _update_py(out: torch.Tensor, lse: torch.Tensor, block_out: torch.Tensor, block_lse: torch.Tensor):
        block_out = block_out.to(torch.float32)
        block_lse = block_lse.transpose(-2, -1).unsqueeze(dim=-1)
        out = out - torch.sigmoid(block_lse - lse) * (out - block_out)
        lse = lse - torch.nn.functional.logsigmoid(lse - block_lse)
        return out, lse

    # ring-flash-attention scripts it (@torch.jit.script); if this PyTorch cannot, the eager form
    # runs and the JSON says so.
    try:
        _update = torch.jit.script(_update_py)
        merge_form = "torchscript"
    except Exception as e:  # noqa: BLE001 - any scripting failure falls back to eager
        print(f"note: torch.jit.script failed ({type(e).__name__}: {e}); the merge runs eagerly")
        _update = _update_py
        merge_form = "eager"

    def update(out, lse, block_out, block_lse, sl=None):
        """ring-flash-attention's update_out_and_lse; out [b, s, h, d] float32, lse [b, s, h, 1]."""
        if out is None:
            return block_out.to(f32), block_lse.transpose(-2, -1).unsqueeze(dim=-1)
        if sl is None:
            return _update(out, lse, block_out, block_lse)
        so, sls = _update(out[:, sl], lse[:, sl], block_out, block_lse)
        out[:, sl], lse[:, sl] = so, sls
        return out, lse

    # Kernels. Tensors are [b, s, heads, d] (flash_attn's layout); the aten ops see [b, heads, s, d]
    # views of them, and their output is [b, s, heads, d] in memory (PyTorch's flash wrapper).
    def fwd(q, k, v, causal):
        o, lse, cq, ck, mq, mk, seed, off, _ = aten._scaled_dot_product_flash_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0, causal, False, scale=scale)
        return o.transpose(1, 2), lse, (cq, ck, mq, mk, seed, off)

    def bwd(dout, q, k, v, out, lse, meta, causal):
        cq, ck, mq, mk, seed, off = meta
        dq, dk, dv = aten._scaled_dot_product_flash_attention_backward(
            dout.transpose(1, 2), q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), out.transpose(1, 2),
            lse, cq, ck, mq, mk, 0.0, causal, seed, off, scale=scale)
        dq, dk, dv = dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)
        # flash_attn's GQA: the expanded heads' dK, dV summed over each KV head's query heads.
        b_, s_ = dk.shape[0], dk.shape[1]
        dk = dk.reshape(b_, s_, hkv, rep, d).sum(dim=3)
        dv = dv.reshape(b_, s_, hkv, rep, d).sum(dim=3)
        return dq, dk, dv

    # The whole sequence, sharded both ways; K, V expanded to the query heads once.
    torch.manual_seed(0)
    L = P * n
    Q = torch.randn(1, L, h, d, device=dev, dtype=bf16)
    K = torch.randn(1, L, hkv, d, device=dev, dtype=bf16)
    V = torch.randn(1, L, hkv, d, device=dev, dtype=bf16)
    dO = torch.randn(1, L, h, d, device=dev, dtype=bf16)
    Kx, Vx = K.repeat_interleave(rep, dim=2), V.repeat_interleave(rep, dim=2)

    def zigzag_rows(rank):
        c = n // 2
        return torch.cat([torch.arange(rank * c, (rank + 1) * c), torch.arange((2 * P - 1 - rank) * c, (2 * P - rank) * c)])

    def striped_rows(rank):
        return torch.arange(rank, L, P)

    rows = {"zigzag": zigzag_rows, "striped": striped_rows}

    def shard(t, scheme, rank):
        return t[:, rows[scheme](rank).to(dev)].contiguous()

    def replay(scheme, kernels_only=False, with_backward=True):
        """Rank r's P steps, forward then backward; returns (out, dq)."""
        q, do = shard(Q, scheme, r), shard(dO, scheme, r)
        out = lse = None
        metas = []
        for s in range(P):
            src = (r - s) % P
            k, v = shard(Kx, scheme, src), shard(Vx, scheme, src)
            if scheme == "zigzag":
                if s == 0:
                    call = (q, k, v, True, None)
                elif s <= r:
                    call = (q, k[:, :half], v[:, :half], False, None)
                else:
                    call = (q[:, half:], k, v, False, slice(half, None))
            else:
                if src <= r:
                    call = (q, k, v, True, None)
                else:
                    call = (q[:, 1:], k[:, :-1], v[:, :-1], True, slice(1, None))
            cq, ck, cv, causal, sl = call
            bo, bl, meta = fwd(cq, ck, cv, causal)
            metas.append((call, bo, bl, meta))
            if not kernels_only:
                out, lse = update(out, lse, bo, bl, sl if s > 0 else None)
        if kernels_only:
            out = metas[0][1].to(f32)
        out16 = out.to(bf16)
        if not with_backward:
            return out16, None
        # Backward: each step's call with the merged output and lse of the whole ring (as the
        # real backward receives them), gradients accumulated in float32.
        lse_full = lse.squeeze(-1).transpose(1, 2).contiguous() if lse is not None else metas[0][2]
        dq = dk = dv = None
        for s, ((cq, ck, cv, causal, sl), _, _, meta) in enumerate(metas):
            if sl is None:
                o_, do_, l_ = out16, do, lse_full
            else:
                o_, do_, l_ = out16[:, sl], do[:, sl], lse_full[:, :, sl].contiguous()
            bq, bk, bv = bwd(do_, cq, ck, cv, o_, l_, meta, causal)
            if kernels_only:
                continue
            if s == 0:
                dq, dk, dv = bq.to(f32), bk.to(f32), bv.to(f32)
                continue
            if sl is None:
                dq += bq
            else:
                dq[:, sl] += bq
            kv_rows = ck.shape[1]
            if scheme == "zigzag" and kv_rows == half:
                dk[:, :half] += bk
                dv[:, :half] += bv
            elif scheme == "striped" and sl is not None:
                dk[:, :-1] += bk
                dv[:, :-1] += bv
            else:
                dk += bk
                dv += bv
        return out16, dq

    # Check: the replayed rank's output and dQ against causal attention over the whole sequence.
    Qr = Q.clone().requires_grad_(True)
    ref = F.scaled_dot_product_attention(Qr.transpose(1, 2), Kx.transpose(1, 2), Vx.transpose(1, 2), is_causal=True)
    ref = ref.transpose(1, 2)
    ref.backward(dO)
    checks = {}
    ok = True
    for scheme in ("zigzag", "striped"):
        idx = rows[scheme](r).to(dev)
        out, dq = replay(scheme)
        ro, rq = ref.detach()[:, idx].float(), Qr.grad[:, idx].float()
        e_out = (out.float() - ro).abs().max().item()
        e_dq = (dq - rq).abs().max().item() / max(rq.abs().max().item(), 1e-30)
        # bf16 inputs, float32 merges: outputs of magnitude ~0.1 with bf16 rounding of each block's
        # output (2^-8 relative) bound the forward by 2e-2 absolute; dQ relative to its largest
        # element by 5e-2 (bf16 dO, dS and per-step rounding before the float32 sum).
        good = e_out < 2e-2 and e_dq < 5e-2
        checks[scheme] = {"max_abs_err_out": e_out, "max_rel_err_dq": e_dq, "ok": good}
        print(f"check {scheme}: out max |err| {e_out:.3e}, dQ max err / max |dQ| {e_dq:.3e}: {'ok' if good else 'FAILED'}")
        ok = ok and good
    del Qr, ref
    if not ok:
        print("FAILED: the replay does not reproduce causal attention; nothing timed")
        return 1

    def median_ms(fn):
        for _ in range(a.warmup):
            fn()
        times = []
        for _ in range(a.iters):
            s_, e_ = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s_.record()
            fn()
            e_.record()
            torch.cuda.synchronize()
            times.append(s_.elapsed_time(e_))
        return statistics.median(times)

    # The single call: one rank's 8192 tokens, causal, forward and forward + backward.
    q1, k1, v1, do1 = Q[:, :n].contiguous(), Kx[:, :n].contiguous(), Vx[:, :n].contiguous(), dO[:, :n].contiguous()

    def call_fwd():
        fwd(q1, k1, v1, True)

    def call_fwd_bwd():
        o, l, m = fwd(q1, k1, v1, True)
        bwd(do1, q1, k1, v1, o, l, m, True)

    result = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "ranks": P, "tokens_per_rank": n,
              "rank": r, "heads": h, "kv_heads": hkv, "head_dim": d, "merge": merge_form, "checks": checks}
    t_fwd, t_all = median_ms(call_fwd), median_ms(call_fwd_bwd)
    result["call"] = {"fwd_ms": t_fwd, "fwd_bwd_ms": t_all}
    print(f"one {n}-token causal call: forward {t_fwd:.3f} ms, forward + backward {t_all:.3f} ms")
    # Sharding copies (shard()) happen inside replay(); they are timed once alone and taken out.
    for scheme in ("zigzag", "striped"):
        shards = median_ms(lambda: [shard(t, scheme, (r - s) % P) for s in range(P) for t in (Kx, Vx)]
                           + [shard(Q, scheme, r), shard(dO, scheme, r)])
        f_all = median_ms(lambda: replay(scheme, with_backward=False)) - shards
        f_k = median_ms(lambda: replay(scheme, kernels_only=True, with_backward=False)) - shards
        fb_all = median_ms(lambda: replay(scheme)) - shards
        fb_k = median_ms(lambda: replay(scheme, kernels_only=True)) - shards
        share = P * t_all / fb_all
        share_k = P * t_all / fb_k
        out_f = (f_all - f_k) / (P - 1)
        out_b = ((fb_all - f_all) - (fb_k - f_k)) / (P - 1)
        result[scheme] = {"fwd_ms": f_all, "fwd_kernels_ms": f_k, "fwd_bwd_ms": fb_all, "fwd_bwd_kernels_ms": fb_k,
                          "outside_kernels_per_later_step_fwd_ms": out_f, "outside_kernels_per_later_step_bwd_ms": out_b,
                          "share_of_ideal": share, "share_of_ideal_kernels_only": share_k, "sharding_copies_ms": shards}
        print(f"{scheme}: forward {f_all:.2f} ms ({f_k:.2f} in kernels), forward + backward {fb_all:.2f} ms "
              f"({fb_k:.2f} in kernels); outside the kernels per later step: forward {out_f:.3f} ms, backward "
              f"{out_b:.3f} ms; share of ideal {100 * share:.1f} % ({100 * share_k:.1f} % kernels only)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
