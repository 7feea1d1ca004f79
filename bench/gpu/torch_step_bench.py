#!/usr/bin/env python3
"""One GPU, one whole training step of a Llama-shaped decoder in plain PyTorch: the measured run
that ringplan's single-GPU prediction is compared with (configs/validation/h200_torch_step/).

Model (as ringplan's model files describe it): token embedding; per layer RMSNorm, QKV projection
(GQA, no bias), rotary embedding, causal scaled_dot_product_attention (enable_gqa), output
projection, residual, RMSNorm, SwiGLU MLP, residual; final RMSNorm, untied output layer,
cross-entropy. Mixed precision as PyTorch users run it: float32 parameters, gradients and AdamW
state, bf16 autocast for the GEMMs and attention. No torch.compile, no activation checkpointing.

Timed with CUDA events: forward (incl. loss), backward, optimizer step; median over --steps after
--warmup. Peak memory: torch.cuda.max_memory_allocated over the timed steps. The loss must fall
over the steps on a fixed batch (a check that the step trains).

--block torchtitan writes the block as torchtitan's Llama code does (separate Q, K, V and gate/up
projections, RoPE as a complex product in float32, repeat_kv expanding K and V to the query heads
before SDPA), the code the cost model's `elementwise: eager` memory and traffic follow; the default
(fused) is the block above, whose V is a view of the fused QKV output. Run both, with --kv-heads
equal to --heads (MHA) as well, to see the two mechanisms apart.

usage: torch_step_bench.py [--layers 4] [--seq 16384] [--hidden 4096] [--heads 32] [--kv-heads 8]
                           [--ffn 14336] [--vocab 128256] [--steps 6] [--warmup 3]
                           [--block fused|torchtitan] [--json FILE]
"""
import argparse
import json
import statistics
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=16384)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--ffn", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--block", choices=["fused", "torchtitan"], default="fused")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError as e:
        print(f"SKIPPED: PyTorch not importable ({e})")
        return 0
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device visible to PyTorch")
        return 0
    dev = "cuda"
    torch.manual_seed(0)
    h, nh, nkv, f, V, L = a.hidden, a.heads, a.kv_heads, a.ffn, a.vocab, a.seq
    d = h // nh

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.g = nn.Parameter(torch.ones(h))

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * self.g.to(x.dtype)

    pos = torch.arange(L, device=dev, dtype=torch.float32)
    inv = 500000.0 ** (-torch.arange(0, d, 2, device=dev, dtype=torch.float32) / d)
    ang = torch.outer(pos, inv)
    cos, sin = ang.cos().to(torch.bfloat16), ang.sin().to(torch.bfloat16)

    def rope(x):  # x: [b, heads, L, d], rotate pairs (first half, second half)
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = RMSNorm(), RMSNorm()
            self.qkv = nn.Linear(h, (nh + 2 * nkv) * d, bias=False)
            self.o = nn.Linear(nh * d, h, bias=False)
            self.up = nn.Linear(h, 2 * f, bias=False)
            self.down = nn.Linear(f, h, bias=False)

        def forward(self, x):
            b = x.shape[0]
            q, k, v = self.qkv(self.n1(x)).split([nh * d, nkv * d, nkv * d], dim=-1)
            q = rope(q.view(b, L, nh, d).transpose(1, 2))
            k = rope(k.view(b, L, nkv, d).transpose(1, 2))
            v = v.view(b, L, nkv, d).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + self.o(y.transpose(1, 2).reshape(b, L, nh * d))
            g, u = self.up(self.n2(x)).chunk(2, dim=-1)
            return x + self.down(F.silu(g) * u)

    if nh % nkv != 0:
        print(f"FAILED: --heads {nh} is not a multiple of --kv-heads {nkv}")
        return 1
    # torchtitan's Llama block (torchtitan/models/llama: apply_rotary_emb, repeat_kv, Attention,
    # FeedForward), written here without importing torchtitan.
    freqs = torch.polar(torch.ones_like(ang), ang)  # complex64 [L, d/2]

    def rope_complex(x):  # x: [b, L, heads, d]
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs.view(1, L, 1, d // 2)).flatten(3).type_as(x)

    def repeat_kv(x, n_rep):  # [b, L, nkv, d] -> [b, L, nkv * n_rep, d]
        if n_rep == 1:
            return x
        b_, s_, n_, d_ = x.shape
        return x[:, :, :, None, :].expand(b_, s_, n_, n_rep, d_).reshape(b_, s_, n_ * n_rep, d_)

    class TorchtitanBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = RMSNorm(), RMSNorm()
            self.wq = nn.Linear(h, nh * d, bias=False)
            self.wk = nn.Linear(h, nkv * d, bias=False)
            self.wv = nn.Linear(h, nkv * d, bias=False)
            self.wo = nn.Linear(nh * d, h, bias=False)
            self.w1 = nn.Linear(h, f, bias=False)
            self.w3 = nn.Linear(h, f, bias=False)
            self.w2 = nn.Linear(f, h, bias=False)

        def forward(self, x):
            b = x.shape[0]
            xn = self.n1(x)
            q = rope_complex(self.wq(xn).view(b, L, nh, d))
            k = rope_complex(self.wk(xn).view(b, L, nkv, d))
            v = self.wv(xn).view(b, L, nkv, d)
            k, v = repeat_kv(k, nh // nkv), repeat_kv(v, nh // nkv)
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            x = x + self.wo(y.transpose(1, 2).contiguous().view(b, L, nh * d))
            xn = self.n2(x)
            return x + self.w2(F.silu(self.w1(xn)) * self.w3(xn))

    block_class = TorchtitanBlock if a.block == "torchtitan" else Block

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, h)
            self.blocks = nn.ModuleList(block_class() for _ in range(a.layers))
            self.norm = RMSNorm()
            self.head = nn.Linear(h, V, bias=False)

        def forward(self, tok, tgt):
            x = self.emb(tok)
            for blk in self.blocks:
                x = blk(x)
            logits = self.head(self.norm(x))
            return F.cross_entropy(logits.view(-1, V).float(), tgt.view(-1))

    model = Model().to(dev)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    tok = torch.randint(0, V, (1, L), device=dev)
    tgt = torch.roll(tok, -1, dims=1)
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    fwd, bwd, step, losses = [], [], [], []
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            torch.cuda.reset_peak_memory_stats()
        ev[0].record()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(tok, tgt)
        ev[1].record()
        loss.backward()
        ev[2].record()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ev[3].record()
        ev[3].synchronize()
        losses.append(loss.item())
        if i >= a.warmup:
            fwd.append(ev[0].elapsed_time(ev[1]))
            bwd.append(ev[1].elapsed_time(ev[2]))
            step.append(ev[2].elapsed_time(ev[3]))
    if not all(map(lambda v: v == v, losses)) or not losses[-1] < losses[0]:
        print(f"FAILED: the loss did not fall on a fixed batch: {losses}")
        return 1
    med = lambda xs: statistics.median(xs)
    total = [x + y + z for x, y, z in zip(fwd, bwd, step)]
    r = dict(device=torch.cuda.get_device_properties(0).name, torch=torch.__version__, block=a.block, layers=a.layers, seq=L,
             hidden=h, heads=nh, kv_heads=nkv, ffn=f, vocab=V, params=params, steps=a.steps, warmup=a.warmup,
             forward_ms=med(fwd), backward_ms=med(bwd), optimizer_ms=med(step), step_ms=med(total),
             step_ms_min=min(total), step_ms_max=max(total),
             peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30, losses=losses)
    print(f"{r['device']}: {a.block} block, {a.layers} layers, {L} tokens, {params / 1e9:.3f} B parameters: step {r['step_ms']:.2f} ms "
          f"(min {r['step_ms_min']:.2f}, max {r['step_ms_max']:.2f}); forward {r['forward_ms']:.2f}, backward "
          f"{r['backward_ms']:.2f}, optimizer {r['optimizer_ms']:.2f} ms; peak memory {r['peak_memory_gib']:.2f} GiB; "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(r, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
