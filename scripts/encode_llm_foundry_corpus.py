#!/usr/bin/env python3
"""Encode MosaicML llm-foundry's published MPT training benchmarks as validation cases.

Source: mosaicml/llm-foundry scripts/train/benchmarking/README.md at commit
495218376830947dce625efabc4d86be7c47cc45 (its tables are unchanged since b2a43a147, 2023-10-19,
"Update_pretrain_benchmarks"), sections "H100 80GB BF16 (Large Scale, >= 128 GPUs)", "H100 80GB
BF16", "A100 80GB with 1600 Gbps node-node interconnect (RoCE)" and "A100 40GB with 1600 Gbps
node-node interconnect (RoCE)". Model shapes: scripts/train/yamls/pretrain/mpt-*.yaml and
llmfoundry/models/mpt/configuration_mpt.py at b2a43a147.

Usage: python3 scripts/encode_llm_foundry_corpus.py README.md [REPO_ROOT]
  README.md: the file above at that commit (git show 495218376:scripts/train/benchmarking/README.md)
  REPO_ROOT: this repository (default: the script's parent folder); writes configs/models/mpt_*.yaml
  and configs/validation/llm_foundry_{a100,a100_40gb,h100,h100_large}/ (each emptied first).

Every row of the four sections is encoded; the H100 FP8 section is not read. Rows with a
sharding strategy other than FULL_SHARD and SHARD_GRAD_OP, SHARD_GRAD_OP with gradient
accumulation, or another precision / MP mode are refused. Each row's NumParams is checked against
the MPT parameter count of its shape (with biases, tied embeddings and learned position embeddings
of max_seq_len rows) before anything is written: exit status 1 on any mismatch or unreadable row.
"""
import os
import shutil
import sys

COMMIT = "495218376830947dce625efabc4d86be7c47cc45"
SHAPE_COMMIT = "b2a43a147"
VOCAB = 50368
# d_model, n_heads, n_layers (mpt-<size>.yaml at b2a43a147); expansion_ratio 4 for all.
SHAPES = {
    "125m": (768, 12, 12),
    "350m": (1024, 16, 24),
    "760m": (1536, 12, 24),
    "1b": (2048, 16, 24),
    "3b": (2560, 20, 32),
    "7b": (4096, 32, 32),
    "13b": (5120, 40, 40),
    "30b": (7168, 56, 48),
    "70b": (8192, 64, 80),
}
SECTIONS = {
    "## H100 80GB BF16": ("h100", "dgx_h100"),
    "## H100 80GB BF16 (Large Scale, >= 128 GPUs)": ("h100_large", "dgx_h100"),
    "## A100 80GB with 1600 Gbps node-node interconnect (RoCE)": ("a100", "dgx_a100_80gb"),
    "## A100 40GB with 1600 Gbps node-node interconnect (RoCE)": ("a100_40gb", "dgx_a100_40gb"),
}


def mpt_params(size, seq):
    """MPT's parameter count: biases on every linear layer and LayerNorm (no_bias False), tied
    embedding (vocab x d), learned position embedding (max_seq_len x d), final LayerNorm."""
    d, _, layers = SHAPES[size]
    per_layer = 12 * d * d + 13 * d  # Wqkv 3d^2 + 3d, out d^2 + d, up 4d^2 + 4d, down 4d^2 + d, 2 LN 4d
    return layers * per_layer + VOCAB * d + seq * d + 2 * d


def parse_tables(text):
    rows = []
    section = None
    header = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = SECTIONS.get(line.strip())
            header = None
            continue
        if section is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Model":
            header = cells
            continue
        if header is None or set(cells[0]) <= {"-", " "}:
            continue
        if len(cells) != len(header):
            raise ValueError(f"row with {len(cells)} cells under a {len(header)}-column header: {line}")
        rows.append((section, dict(zip(header, cells))))
    return rows


def model_yaml(size):
    d, heads, layers = SHAPES[size]
    return f"""# MPT-{size} as benchmarked by MosaicML llm-foundry (scripts/train/benchmarking/README.md at
# {COMMIT}): mosaicml/llm-foundry scripts/train/yamls/pretrain/mpt-{size}.yaml at commit
# {SHAPE_COMMIT} (d_model {d}, n_heads {heads}, n_layers {layers}, expansion_ratio 4, vocab_size {VOCAB}).
# From llmfoundry/models/mpt/configuration_mpt.py and modeling_mpt.py at the same commit: multi-head
# attention (kv_heads = heads), GELU MLP of 4 x d_model (not gated), output layer tied to the input
# embedding (logits = wte(hidden, unembed=True)), no dropout (attn_pdrop, resid_pdrop, emb_pdrop 0),
# positions from a learned table added to the token embedding (learned_pos_emb True, alibi False:
# no RoPE, `position_embedding: learned`).
# Not represented here (no FLOPs in the blocks' GEMMs): the biases of every linear layer and
# LayerNorm (no_bias False) and the learned position embedding (max_seq_len x d_model); the
# README's NumParams column equals layers * (12 d^2 + 13 d) + vocab * d + max_seq_len * d + 2 d for
# every encoded row (checked by scripts/encode_llm_foundry_corpus.py).
name: mpt_{size}
layers: {layers}
hidden: {d}
heads: {heads}
kv_heads: {heads}
head_dim: {d // heads}
ffn_hidden: {4 * d}
gated_mlp: false
vocab: {VOCAB}
tied_embeddings: true
position_embedding: learned
"""


HEADER = """# MosaicML llm-foundry MPT training benchmark, mosaicml/llm-foundry
# scripts/train/benchmarking/README.md at commit {commit}, section "{section}":
# row Model {model}, SeqLen {seq}, # GPUs {gpus}, MicroBatchSize {mb}, GradAccum {ga}, GlobalBatchSize
# {gbs}, Precision {prec}, MP Mode {mp}, Sharding Strategy {shard}, Activation Checkpointing {ac}:
# Throughput (T/s/GPU) {tps} (MFU {mfu} %).
# Assumptions and settings (configs/validation/README.md):
{sharding_note}#  * Precision amp_bf16 with MP Mode DEFAULT: float32 parameters under torch.autocast
#    (`mixed_precision: autocast`). Composer's FSDP DEFAULT of that time gathered float32
#    parameters and reduced in bf16 (composer/trainer/mosaic_fsdp_utils.py get_mixed_precision:
#    DEFAULT sets reduce_dtype = precision, buffer_dtype float32, param_dtype unset):
#    `param_gather_dtype: fp32`, `grad_reduce_dtype: bf16`. Precision bf16 with MP Mode PURE
#    (every A100 40GB row, the A100 80GB 70B rows): bf16 parameters gathered for the forward and
#    backward, bf16 gradient reduction (`grad_reduce_dtype: bf16`), a float32 sharded master copy
#    and float32 gradient shards (`mixed_precision: master_weights`, `grad_accumulation_dtype: fp32`).
#  * Optimizer decoupled_adamw (the mpt-*.yaml files): Adam. Gradient clipping by norm at 1.0.
{attention_note}#  * Loss: loss_fn fused_crossentropy (flash-attn's CrossEntropyLoss, modeling_mpt.py; flash-attn
#    v1.0.3.post0 flash_attn/losses/cross_entropy.py: xentropy_cuda_lib over the 16-bit logits, saves
#    them and writes a 16-bit gradient, no float32 copy): `cross_entropy: fused_16bit`. No
#    torch.compile (PyTorch 1.13 / 2.0 images): the GELU, residual adds and casts run as separate
#    PyTorch ops (`elementwise: eager`); the norms are low_precision_layernorm (LPLayerNorm,
#    llmfoundry/models/layers/norm.py: the input cast to the autocast dtype, then one F.layer_norm
#    with autocast off; submit_benchmarks.py sets norm_type low_precision_layernorm): `norm:
#    low_precision`.
#  * Activation Checkpointing True: Composer checkpoints every MPT block (`recompute: full`).
#  * Throughput (T/s/GPU): Composer's speed monitor over a window of steady-state batches,
#    tokens per second per GPU (`tokens_per_s_per_device`); MFU is a formula of it (not encoded).
#  * Cluster: {cluster_note}
"""
CLUSTER_NOTE = {
    "a100": "configs/clusters/dgx_a100_80gb.yaml (8 A100 80GB SXM per node on NVSwitch; the section's\n#    1600 Gbps per node = 200 Gb/s per GPU between nodes, the profile's inter-node link).",
    "a100_40gb": "configs/clusters/dgx_a100_40gb.yaml (8 A100 40GB SXM per node on NVSwitch; the\n#    section's 1600 Gbps per node = 200 Gb/s per GPU between nodes).",
    "h100": "configs/clusters/dgx_h100.yaml (8 H100 80GB SXM per node on NVSwitch). The section does\n#    not name the network between nodes (rows with more than 8 GPUs): ASSUMED the profile's 400 Gb/s\n#    per GPU.",
    "h100_large": "configs/clusters/dgx_h100.yaml (8 H100 80GB SXM per node on NVSwitch). The section\n#    (128 to 512 GPUs) does not name the network between nodes: ASSUMED the profile's 400 Gb/s per\n#    GPU, as for the section \"H100 80GB BF16\".",
}
SECTION_TITLE = {"h100": "H100 80GB BF16", "h100_large": "H100 80GB BF16 (Large Scale, >= 128 GPUs)",
                 "a100": "A100 80GB with 1600 Gbps node-node interconnect (RoCE)",
                 "a100_40gb": "A100 40GB with 1600 Gbps node-node interconnect (RoCE)"}
SHARDING_NOTE = {
    "FULL_SHARD": """#  * Composer's FSDP (PyTorch FSDP1, flat parameters) with FULL_SHARD over all GPUs = ZeRO-3 over DP
#    (`fsdp: flat`); one FSDP unit per MPT block; Composer reduce-scatters every micro-batch's
#    gradients (no no_sync), as ZeRO-3 does in the model.
""",
    # Only with GradAccum 1 (main() refuses the others): then FSDP's one gather per micro-batch is
    # one per step, as ZeRO-2's.
    "SHARD_GRAD_OP": """#  * Composer's FSDP (PyTorch FSDP1, flat parameters) with SHARD_GRAD_OP over all GPUs (`fsdp: flat`),
#    one FSDP unit per MPT block: parameters, gradients and optimizer state sharded at rest; each
#    unit's parameters are all-gathered before its forward (prefetched behind the unit before) and
#    kept through the backward (no second gather); gradients reduce-scattered. With one micro-batch
#    per step (GradAccum 1, every such row) that is one gather and one reduce-scatter per step: ZeRO-2
#    with the updated weights gathered unit by unit behind the next step's forward (`zero_stage: 2`,
#    `overlap_param_gather: true`). ZeRO-2 keeps the gathered parameters between steps, FSDP frees
#    them after the backward: the memory differs, and the section publishes none.
""",
}
# The Triton kernel's curve: from its published rates on the A100, fitted to the runs on the H100.
ATTENTION_NOTE = {
    "a100": """#  * Attention: llm-foundry's attn_impl triton (the Triton FlashAttention kernel), `attention: flash`
#    on that kernel's own curve (`flash_kernel: triton`: the profile's attention_flash_triton, from
#    FlashAttention v1's published A100 rates, which the kernel's docstring compares it with).
""",
    "h100": """#  * Attention: llm-foundry's attn_impl triton (the Triton FlashAttention kernel), `attention: flash`
#    on that kernel's own curve (`flash_kernel: triton`: the profile's attention_flash_triton). No
#    H100 rate of the kernel is published; the curve is fitted to the 8-64 GPU H100 runs (BENCHMARKS.md).
""",
}
GENERATIONS = ("a100", "a100_40gb", "h100", "h100_large")


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__)
        return 2
    readme = open(sys.argv[1], encoding="utf-8").read()
    root = sys.argv[2] if len(sys.argv) == 3 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    rows = parse_tables(readme)
    if not rows:
        print("no rows read: is this the README at the pinned commit?")
        return 1
    cases = {}
    bad = 0
    for (gen, cluster), r in rows:
        size, seq, gpus = r["Model"], int(r["SeqLen (T)"]), int(r["# GPUs"])
        mb, ga, gbs = int(r["MicroBatchSize"]), int(r["GradAccum"]), int(r["GlobalBatchSize"])
        prec, mp, shard = r["Precision"], r["MP Mode"], r["Sharding Strategy"]
        ac = r["Activation Checkpointing"] == "True"
        tps = int(r["Throughput (T/s/GPU)"])
        if size not in SHAPES:
            print(f"unknown model {size}")
            bad += 1
            continue
        if mpt_params(size, seq) != int(r["NumParams"]):
            print(f"{gen} {size} seq {seq}: NumParams {r['NumParams']} != MPT count {mpt_params(size, seq)}")
            bad += 1
        if mb * ga * gpus != gbs:
            print(f"{gen} {size} seq {seq}: MicroBatchSize {mb} x GradAccum {ga} x GPUs {gpus} != GlobalBatchSize {gbs}")
            bad += 1
        if (shard not in SHARDING_NOTE or (shard == "SHARD_GRAD_OP" and ga != 1)
                or (prec, mp) not in (("amp_bf16", "DEFAULT"), ("bf16", "PURE"))):
            print(f"{gen} {size} seq {seq}: unencoded setting {prec} / {mp} / {shard}")
            bad += 1
            continue
        name = f"llm_foundry_{gen}_mpt_{size}_s{seq}_g{gpus}_mb{mb}_ga{ga}_{'ac' if ac else 'noac'}"
        if name in cases:
            print(f"duplicate row {name}")
            bad += 1
            continue
        autocast = mp == "DEFAULT"
        zero = "zero_stage: 3" if shard == "FULL_SHARD" else "zero_stage: 2, overlap_param_gather: true"
        training = (f"{{seq_len: {seq}, global_batch: {gbs}, dtype: bf16, optimizer: adam, causal: true, "
                    + ("mixed_precision: autocast, param_gather_dtype: fp32, " if autocast
                       else "grad_accumulation_dtype: fp32, ")
                    + "grad_reduce_dtype: bf16, "
                    + "cross_entropy: fused_16bit, elementwise: eager, norm: low_precision, fsdp: flat"
                    + ", flash_kernel: triton}")
        text = HEADER.format(commit=COMMIT, section=SECTION_TITLE[gen], model=size, seq=seq, gpus=gpus, mb=mb,
                             ga=ga, gbs=gbs, prec=prec, mp=mp, shard=shard, ac=r["Activation Checkpointing"],
                             tps=tps, mfu=r["MFU"], cluster_note=CLUSTER_NOTE[gen],
                             sharding_note=SHARDING_NOTE[shard],
                             attention_note=ATTENTION_NOTE["a100" if gen.startswith("a100") else "h100"])
        text += f"""name: {name}
model: ../../models/mpt_{size}.yaml
cluster: ../../clusters/{cluster}.yaml
training: {training}
gpus: {gpus}
mesh: {{dp: {gpus}, tp: 1, cp: 1, pp: 1}}
options: {{micro_batch: {mb}, recompute: {'full' if ac else 'none'}, {zero}, attention: flash}}
published:
  tokens_per_s_per_device: {tps}
  source: "mosaicml/llm-foundry scripts/train/benchmarking/README.md @ {COMMIT[:8]}, {SECTION_TITLE[gen]}, MPT-{size} seq {seq}, {gpus} GPUs, micro-batch {mb} x {ga}, {prec} {mp}, AC {r['Activation Checkpointing']}: {tps} T/s/GPU"
"""
        cases[name] = (gen, text)
    if bad:
        print(f"{bad} problem(s); nothing written")
        return 1
    for gen in GENERATIONS:
        out = os.path.join(root, "configs", "validation", f"llm_foundry_{gen}")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
    for size in SHAPES:
        with open(os.path.join(root, "configs", "models", f"mpt_{size}.yaml"), "w", encoding="utf-8") as f:
            f.write(model_yaml(size))
    for name, (gen, text) in sorted(cases.items()):
        with open(os.path.join(root, "configs", "validation", f"llm_foundry_{gen}", name + ".yaml"), "w",
                  encoding="utf-8") as f:
            f.write(text)
    counts = {g: sum(1 for v in cases.values() if v[0] == g) for g in GENERATIONS}
    print(f"wrote {len(SHAPES)} models, {counts['a100']} A100 80GB, {counts['a100_40gb']} A100 40GB, "
          f"{counts['h100']} H100 and {counts['h100_large']} large-scale H100 cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
