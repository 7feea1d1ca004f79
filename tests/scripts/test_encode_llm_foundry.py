#!/usr/bin/env python3
"""Checks scripts/encode_llm_foundry_corpus.py on a small README of the pinned format.

1. One A100 80GB row whose NumParams matches its MPT shape: the script writes the case with the
   row's figures, the Triton flash kernel and its note, and the model files, under a scratch
   repository root.
2. The same README plus a row whose NumParams does not match (a transcription or shape error):
   exit status 1 and nothing written.
3. A row whose micro-batch x accumulation x GPUs is not its global batch: exit status 1.
4. A SHARD_GRAD_OP row of the large-scale H100 section with one micro-batch per step: written as
   ZeRO-2 with the weights gathered behind the forward, in its own folder; the same row with two
   micro-batches per step (FSDP would then gather per micro-batch, ZeRO-2 once): exit status 1.
Usage: test_encode_llm_foundry.py SCRIPT. Exit status 0 when every check holds.
"""
import os
import subprocess
import sys
import tempfile

HEADER = ("|  Model | SeqLen (T) | # GPUs | GPU | MFU | HFU | Model TFLOP | MicroBatchSize | GradAccum | "
          "GlobalBatchSize | Throughput (S/s) | Throughput (T/s) | Throughput (T/s/GPU) | GlobalBatchSize (T) | "
          "Precision | MP Mode | Sharding Strategy | Activation Checkpointing | Activation CPUOffload | NumParams |\n"
          "|  --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
          "--- | --- | --- |\n")
# MPT-7B at 2048 tokens: 32 x (12 x 4096^2 + 13 x 4096) + 50368 x 4096 + 2048 x 4096 + 2 x 4096.
GOOD = ("|  7b | 2048 | 8 | a100_80gb | 64.23 | 64.23 |  2.003836E+14 | 6 | 2 | 96 | 18 | 37130 | 4641 | "
        "196608 | amp_bf16 | DEFAULT | FULL_SHARD | False | False | 6658859008 |\n")
BAD_PARAMS = GOOD.replace("6658859008", "6658859009")
BAD_BATCH = GOOD.replace("| 6 | 2 | 96 |", "| 6 | 2 | 97 |")
# MPT-1B at 2048 tokens on 128 H100s, SHARD_GRAD_OP, GradAccum 1: 24 x (12 x 2048^2 + 13 x 2048)
# + 50368 x 2048 + 2048 x 2048 + 2 x 2048.
SGO = ("|  1b | 2048 | 128 | h100_80gb | 40.6 | 40.6 | 401 | 12 | 1 | 1536 | 2757 | 5647854 | 44123 | 3145728 | "
       "amp_bf16 | DEFAULT | SHARD_GRAD_OP | False | False | 1315950592 |\n")
SGO_ACCUM = SGO.replace("| 12 | 1 | 1536 |", "| 6 | 2 | 1536 |")


def readme(*rows, section="A100 80GB with 1600 Gbps node-node interconnect (RoCE)"):
    return f"# MPT Training Benchmarks\n\n## {section}\n\n" + HEADER + "".join(rows)


def run(script, text):
    root = tempfile.mkdtemp()
    for d in ("configs/models", "configs/validation"):
        os.makedirs(os.path.join(root, d))
    path = os.path.join(root, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    p = subprocess.run([sys.executable, script, path, root], capture_output=True, text=True)
    return p, root


def main():
    script = sys.argv[1]
    failures = []
    p, root = run(script, readme(GOOD))
    case = os.path.join(root, "configs/validation/llm_foundry_a100/llm_foundry_a100_mpt_7b_s2048_g8_mb6_ga2_noac.yaml")
    if p.returncode != 0 or not os.path.exists(case):
        failures.append(f"a valid row was not written (exit {p.returncode}): {p.stdout}{p.stderr}")
    else:
        text = open(case, encoding="utf-8").read()
        for want in ("tokens_per_s_per_device: 4641", "global_batch: 96", "mesh: {dp: 8, tp: 1, cp: 1, pp: 1}",
                     "micro_batch: 6, recompute: none, zero_stage: 3", "mixed_precision: autocast",
                     "model: ../../models/mpt_7b.yaml", "flash_kernel: triton}",
                     "from\n#    FlashAttention v1's published A100 rates"):
            if want not in text:
                failures.append(f"the written case lacks {want!r}")
        model = open(os.path.join(root, "configs/models/mpt_7b.yaml"), encoding="utf-8").read()
        for want in ("layers: 32", "hidden: 4096", "ffn_hidden: 16384", "vocab: 50368", "tied_embeddings: true"):
            if want not in model:
                failures.append(f"mpt_7b.yaml lacks {want!r}")
    for label, row, message in (("NumParams", BAD_PARAMS, "NumParams"), ("batch", BAD_BATCH, "GlobalBatchSize")):
        p, root = run(script, readme(GOOD, row))
        written = os.path.exists(os.path.join(root, "configs/validation/llm_foundry_a100"))
        if p.returncode != 1 or written or message not in p.stdout or "nothing written" not in p.stdout:
            failures.append(f"a bad {label} row: exit {p.returncode}, written {written}, output {p.stdout!r}")
    large = "H100 80GB BF16 (Large Scale, >= 128 GPUs)"
    p, root = run(script, readme(SGO, section=large))
    case = os.path.join(root, "configs/validation/llm_foundry_h100_large/"
                        "llm_foundry_h100_large_mpt_1b_s2048_g128_mb12_ga1_noac.yaml")
    if p.returncode != 0 or not os.path.exists(case):
        failures.append(f"a SHARD_GRAD_OP row was not written (exit {p.returncode}): {p.stdout}{p.stderr}")
    else:
        text = open(case, encoding="utf-8").read()
        for want in ("zero_stage: 2, overlap_param_gather: true", "tokens_per_s_per_device: 44123",
                     "mesh: {dp: 128, tp: 1, cp: 1, pp: 1}", "cluster: ../../clusters/dgx_h100.yaml", "SHARD_GRAD_OP",
                     "flash_kernel: triton}", "the curve is fitted to the 8-64 GPU H100 runs"):
            if want not in text:
                failures.append(f"the SHARD_GRAD_OP case lacks {want!r}")
    p, root = run(script, readme(SGO_ACCUM, section=large))
    written = os.path.exists(os.path.join(root, "configs/validation/llm_foundry_h100_large"))
    if p.returncode != 1 or written or "unencoded setting" not in p.stdout:
        failures.append(f"SHARD_GRAD_OP with GradAccum 2: exit {p.returncode}, written {written}, output {p.stdout!r}")
    for f in failures:
        print("FAILED:", f)
    print("ok" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
