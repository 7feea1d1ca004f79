#!/usr/bin/env bash
# Held-out error of the cost model on the public validation corpus (configs/validation/), one
# fit per GPU generation (cases sharing one cluster profile), with `ringplan fit`. Prints the
# markdown table recorded in BENCHMARKS.md ("Public corpus: held-out error"); every number in
# it is computed here by the project. Fitted profiles go to $OUT (default build/cpu/fit).
# Usage: scripts/corpus_heldout.sh [path/to/ringplan]
set -euo pipefail
cd "$(dirname "$0")/.."
RP=${1:-build/cpu/cli/ringplan}
OUT=${OUT:-build/cpu/fit}
V=configs/validation
mkdir -p "$OUT"
BYTP="$OUT/heldout_by_tp.md"
BYG="$OUT/heldout_by_gpus.md"
: > "$BYTP"
: > "$BYG"
# The shipped H100, B200, Grand Teton and H200 profiles carry training scales fitted to these very
# cases (efficiency.training_scale): a fit that starts from them, or is pulled toward them by
# its prior, would see the held-out cases through them. Every fit below starts from the kernel
# curves alone: the profile with that key removed.
for p in dgx_h100 b200 grand_teton_h100 h200; do
  sed '/^  training_scale:/d' "configs/clusters/$p.yaml" > "$OUT/${p}_kernels.yaml"
done
# dgx_h100 ships the Triton flash kernel's curve fitted to the llm-foundry H100 runs: the fits of
# those runs start from the A100's published-rate curve (dgx_a100_80gb.yaml) in its place, in the
# kernel-curve copy and in a copy of the shipped profile (the shipped method's start).
TRITON_START='s/^  attention_flash_triton: {max: [0-9.]*, half_tflop: [0-9.]*}$/  attention_flash_triton: {max: 0.279, half_tflop: 0.0197}/'
sed -i "$TRITON_START" "$OUT/dgx_h100_kernels.yaml"
sed "$TRITON_START" configs/clusters/dgx_h100.yaml > "$OUT/dgx_h100_triton_start.yaml"
for f in "$OUT/dgx_h100_kernels.yaml" "$OUT/dgx_h100_triton_start.yaml"; do
  [ "$(grep -c '^  attention_flash_triton: {max: 0.279, half_tflop: 0.0197}$' "$f")" = 1 ] ||
    { echo "corpus_heldout.sh: could not set the Triton kernel's start curve in $f" >&2; exit 1; }
done
# Likewise jean_zay_a100_80gb ships the inter-node efficiency fitted to the BigScience runs;
# its fits start from the network's one published benchmark (0.08): every max of the profile's
# collectives_inter_node block (the lines indented under it) is set back to 0.08.
JZ="$OUT/jean_zay_a100_80gb_published_network.yaml"
awk '/^  collectives_inter_node:/ { block = 1; print; next }
     block && /^    / { sub(/\{max: [0-9.]+,/, "{max: 0.08,"); print; next }
     { block = 0; print }' configs/clusters/jean_zay_a100_80gb.yaml > "$JZ"
[ "$(grep -c '{max: 0.08, half_mib: 0}' "$JZ")" = 3 ] || { echo "corpus_heldout.sh: could not restore the published 0.08 in $JZ" >&2; exit 1; }
# dgx_a100_80gb (and the A100 40GB and Jean Zay profiles, which copy it) ships matmul and memory
# bandwidth fitted to the Korthikanti runs themselves: every fit that sees those runs starts from
# the values the profile held before that fit (matmul 0.75 / 0.03 TFLOP, attention
# 0.6 / 0.016 TFLOP, memory bandwidth 0.8), so that no held-out run is seen through its base.
A100="$OUT/dgx_a100_80gb_prefit.yaml"
sed -e 's/^  matmul: {max: [0-9.]*, half_tflop: [0-9.]*}/  matmul: {max: 0.75, half_tflop: 0.03}/' \
    -e 's/^  attention: {max: [0-9.]*, half_tflop: [0-9.]*}/  attention: {max: 0.6, half_tflop: 0.016}/' \
    -e 's/^  memory_bandwidth: [0-9.]*$/  memory_bandwidth: 0.8/' configs/clusters/dgx_a100_80gb.yaml > "$A100"
[ "$(grep -c '^  matmul: {max: 0.75, half_tflop: 0.03}$\|^  attention: {max: 0.6, half_tflop: 0.016}$\|^  memory_bandwidth: 0.8$' "$A100")" = 3 ] ||
  { echo "corpus_heldout.sh: could not restore the A100 pre-fit curves in $A100" >&2; exit 1; }
row() {  # label, profile out, fit args...
  local label=$1 out=$2; shift 2
  "$RP" fit "$@" -o "$OUT/$out.yaml" --format json | python3 -c '
import json, sys
label = sys.argv[1]
j = json.load(sys.stdin)
f = j["fitted"]
fit = "mm {:.3f}/{:.3f}, attn {:.3f}/{:.3f}, bw {:.2f}".format(f["matmul.max"], f["matmul.half_tflop"],
      f["attention.max"], f["attention.half_tflop"], f["memory_bandwidth"])
if "matmul_fp8.max" in f:
    fit += ", fp8 {:.3f}/{:.3f}".format(f["matmul_fp8.max"], f["matmul_fp8.half_tflop"])
if "matmul.half_k" in f:
    fit += ", K-ramp {:.0f}".format(f["matmul.half_k"])
if "attention_flash_triton.max" in f:
    fit += ", flash-triton {:.3f}/{:.3f}".format(f["attention_flash_triton.max"], f["attention_flash_triton.half_tflop"])
if "attention_flash_fa2.max" in f:
    fit += ", flash-fa2 {:.3f}/{:.3f}".format(f["attention_flash_fa2.max"], f["attention_flash_fa2.half_tflop"])
if "collectives_inter_node.max" in f:
    fit += ", inter-node coll {:.2f}".format(f["collectives_inter_node.max"])
if "training_scale.attention" in f:
    fit += ", training scales {:.3f} / {:.3f}".format(f["training_scale.matmul"], f["training_scale.attention"])
elif "training_scale.matmul" in f:
    fit += ", matmul training scale {:.3f}".format(f["training_scale.matmul"])
for src, s in sorted(j["heldout_by_source"].items()):
    print("| {} | {} | {} | {:.2f} | {:.2f} | {:.2f} / {:.2f} | {} |".format(label, src, s["cases"],
          s["mean_abs_error_pct"], s["max_abs_error_pct"], j["train"]["mean_abs_error_pct"],
          j["train"]["max_abs_error_pct"], fit))
print("| {} | **all held out** | {} | **{:.2f}** | **{:.2f}** | | |".format(label, j["heldout"]["cases"],
      j["heldout"]["mean_abs_error_pct"], j["heldout"]["max_abs_error_pct"]))
with open(sys.argv[2], "a") as out:
    for tp, s in sorted(j["heldout_by_tp"].items(), key=lambda kv: int(kv[0])):
        out.write("| {} | {} | {} | {:+.2f} | {:.2f} | {:.2f} |\n".format(label, tp, s["cases"],
                  s["mean_signed_error_pct"], s["mean_abs_error_pct"], s["max_abs_error_pct"]))
bands = ["1-8", "9-64", "65-512", "513-4096", ">4096"]
with open(sys.argv[3], "a") as out:
    for band, s in sorted(j["heldout_by_gpus"].items(), key=lambda kv: bands.index(kv[0])):
        out.write("| {} | {} | {} | {:+.2f} | {:.2f} | {:.2f} |\n".format(label, band, s["cases"],
                  s["mean_signed_error_pct"], s["mean_abs_error_pct"], s["max_abs_error_pct"]))
' "$label" "$BYTP" "$BYG"
}
echo "| fit (GPU generation, method) | held-out source | cases | held-out mean \|err\| % | held-out max \|err\| % | training mean / max % | fitted (max/half_tflop; bw) |"
echo "|---|---|---|---|---|---|---|"
# The shipped A100 curves: matmul and memory bandwidth fitted to Korthikanti's runs, the attention
# curve held (the torchtitan runs predicted from it unseen: "fit on Korthikanti only" below).
# The torchtitan A100 runs' attention is FlashAttention-2 on its own curve (`flash_kernel: fa2`):
# that curve is the attention the fits that see them move, `attention` (which no A100 case runs:
# Korthikanti's is materialized) held.
A100_FA2=(--fix attention --free attention_flash_fa2)
row "A100 shipped method: Korthikanti, attention held, 5-fold" a100_shipped $V/korthikanti2022 --cluster "$A100" --fix attention
row "A100 (dgx_a100_80gb), 5-fold" a100_kfold $V/korthikanti2022 $V/torchtitan_a100 --cluster "$A100" "${A100_FA2[@]}"
row "A100, fit on Korthikanti only" a100_hold_tt $V/korthikanti2022 $V/torchtitan_a100 --holdout torchtitan_a100 --cluster "$A100" "${A100_FA2[@]}"
row "A100, fit on torchtitan only" a100_hold_k $V/korthikanti2022 $V/torchtitan_a100 --holdout korthikanti2022 --cluster "$A100" "${A100_FA2[@]}"
SCALES=(--fix matmul attention memory_bandwidth --free training_scale)
row "A100, fit on Korthikanti only, training scales" a100_hold_tt_scales $V/korthikanti2022 $V/torchtitan_a100 --holdout torchtitan_a100 --cluster "$A100" "${SCALES[@]}"
row "A100, fit on torchtitan only, training scales" a100_hold_k_scales $V/korthikanti2022 $V/torchtitan_a100 --holdout korthikanti2022 --cluster "$A100" "${SCALES[@]}"
row "H100 FP8 (NeMo), 5-fold, training scales on the measured kernel curves" h100_fp8_nemo $V/nemo_long_sequence_h100 --cluster "$OUT/dgx_h100_kernels.yaml" "${SCALES[@]}"
# The project's own steps on one H200 (eager PyTorch), the card its kernel curves were measured on:
# the shipped h200 scales (4 cases: 4-fold, each fold on the default prior weight).
row "H200 (the project's own training steps, eager PyTorch), 4-fold, training scales on the measured kernel curves" h200_steps $V/h200_torch_step --cluster "$OUT/h200_kernels.yaml" "${SCALES[@]}"
row "B200 FP8 GEMM (NeMo), 5-fold, training scales" b200_fp8_nemo $V/nemo_long_sequence_b200 --cluster "$OUT/b200_kernels.yaml" "${SCALES[@]}"
row "H100 Grand Teton (torchtitan FP8 + bf16), 5-fold, training scales" gt_scales $V/torchtitan_h100_fp8 $V/torchtitan_h100_bf16 --cluster "$OUT/grand_teton_h100_kernels.yaml" "${SCALES[@]}"
# torchtitan's compiled bf16 rows (the eager rows' jobs under torch.compile), which no shipped
# profile is fitted to: held out from the same fit.
row "H100 Grand Teton, torch.compile bf16 rows held out (fit on torchtitan FP8 + bf16, training scales)" gt_compile $V/torchtitan_h100_fp8 $V/torchtitan_h100_bf16 $V/torchtitan_h100_compile --holdout torchtitan_h100_compile --cluster "$OUT/grand_teton_h100_kernels.yaml" "${SCALES[@]}"
# The profile carries its own (measured) FP8 GEMM curve, which the FP8 runs' blocks run on: fit it too.
# These runs' attention is FlashAttention-2 on its own curve (`flash_kernel: fa2`): its curve is
# the attention the fits below move (`attention`, the cuDNN-class curve, is held: none of them runs it).
FA2=(--fix attention --free attention_flash_fa2)
row "H100 Grand Teton FP8 GEMM (torchtitan), 5-fold, FP8 curve fitted too" gt_fp8 $V/torchtitan_h100_fp8 --cluster "$OUT/grand_teton_h100_kernels.yaml" --free matmul_fp8 "${FA2[@]}"
row "H100 Grand Teton bf16 (torchtitan), 2-fold" gt_bf16 $V/torchtitan_h100_bf16 --folds 2 --cluster "$OUT/grand_teton_h100_kernels.yaml" "${FA2[@]}"
# The llm-foundry A100 runs use the Triton flash kernel (training.flash_kernel: triton), whose
# curve the A100 profiles take from its published rates (FlashAttention-2, Figure 4). Fits on
# those runs alone fit that curve in place of `attention`, which none of them runs; fits that
# see them beside FlashAttention-2 runs fit both; the held-out row fits neither on them.
TRITON=(--free attention_flash_triton)
row "A100 llm-foundry (Composer FSDP, Triton FlashAttention), 5-fold, the Triton kernel's curve fitted" llmf_a100 $V/llm_foundry_a100 --fix attention "${TRITON[@]}"
row "A100 llm-foundry, 5-fold, the Triton kernel on its published rates" llmf_a100_published $V/llm_foundry_a100 --fix attention
row "A100, Korthikanti + torchtitan + llm-foundry, 5-fold" a100_three $V/korthikanti2022 $V/torchtitan_a100 $V/llm_foundry_a100 --cluster "$A100" "${TRITON[@]}" "${A100_FA2[@]}"
row "A100, fit on Korthikanti + torchtitan, llm-foundry held out (the Triton kernel on its published rates)" a100_hold_llmf $V/korthikanti2022 $V/torchtitan_a100 $V/llm_foundry_a100 --holdout llm_foundry_a100 --cluster "$A100" "${A100_FA2[@]}"
# The A100 profiles have no GEMM K-ramp (no A100 GEMM rate by shape is published or measured
# here): the same two fits with it fitted too (matmul.half_k).
row "A100, Korthikanti + torchtitan + llm-foundry, 5-fold, the GEMM K-ramp fitted too" a100_three_k $V/korthikanti2022 $V/torchtitan_a100 $V/llm_foundry_a100 --cluster "$A100" "${TRITON[@]}" "${A100_FA2[@]}" --free matmul.half_k
row "A100, fit on Korthikanti + torchtitan with the GEMM K-ramp, llm-foundry held out" a100_hold_llmf_k $V/korthikanti2022 $V/torchtitan_a100 $V/llm_foundry_a100 --holdout llm_foundry_a100 --cluster "$A100" "${A100_FA2[@]}" --free matmul.half_k
row "A100 40GB llm-foundry (Composer FSDP, Triton FlashAttention, 8-128 GPUs), 5-fold, the Triton kernel's curve fitted" llmf_a100_40gb $V/llm_foundry_a100_40gb --fix attention "${TRITON[@]}"
# The same runs with the inter-node collectives fitted too: 33 of them span 2-16 nodes over
# MosaicML's RoCE fabric (1600 Gbps per node), whose collectives were never measured; the profile's
# inter-node curve is InfiniBand HDR's (nccl-tests, cited in dgx_a100_80gb.yaml).
row "A100 40GB llm-foundry, 5-fold, inter-node collectives fitted (--free: RoCE)" llmf_a100_40gb_net $V/llm_foundry_a100_40gb --fix attention "${TRITON[@]}" --free collectives_inter_node
# The llm-foundry H100 runs use the Triton flash kernel, whose H100 curve is fitted to them in
# every row below (--free attention_flash_triton), `attention` (which they do not run) held. The
# shipped method: that curve alone, the rest as shipped (measured curves, NeMo's training scales).
row "H100 llm-foundry bf16, 5-fold, the Triton kernel's curve alone (shipped method)" llmf_h100_triton $V/llm_foundry_h100 --cluster "$OUT/dgx_h100_triton_start.yaml" --fix matmul attention memory_bandwidth "${TRITON[@]}"
row "H100 llm-foundry, the Triton kernel's curve alone fitted on 8-64 GPUs (shipped method), 128-512 GPUs held out" llmf_h100_triton_scale $V/llm_foundry_h100 $V/llm_foundry_h100_large --holdout llm_foundry_h100_large --cluster "$OUT/dgx_h100_triton_start.yaml" --fix matmul attention memory_bandwidth "${TRITON[@]}"
H100_SCALES=(--fix matmul attention memory_bandwidth --free training_scale.matmul "${TRITON[@]}")
row "H100 llm-foundry bf16 (Composer FSDP, Triton FlashAttention), 5-fold, matmul training scale and the Triton kernel's curve on the measured kernel curves" llmf_h100 $V/llm_foundry_h100 --cluster "$OUT/dgx_h100_kernels.yaml" "${H100_SCALES[@]}"
# The same runs with the curves themselves fitted (max and half_tflop of matmul and attention, and
# the memory bandwidth), from the measured kernel curves: each measured backward curve moves with
# its forward one at the measured ratio. These runs' small GEMMs and eager element-wise work run
# slower inside a step than in isolation, which one scale per family cannot say.
row "H100 llm-foundry bf16, 5-fold, kernel curves fitted from the measured ones" llmf_h100_curves $V/llm_foundry_h100 --cluster "$OUT/dgx_h100_kernels.yaml" --fix attention "${TRITON[@]}"
# Weak scaling held out: fit on the 8-64 GPU runs, predict the same stack on 128-512 GPUs (the
# large-scale section), by both methods; then all 70 runs 5-fold.
row "H100 llm-foundry, fit on 8-64 GPUs (matmul training scale, Triton kernel's curve), 128-512 GPUs held out" llmf_h100_scale_scales $V/llm_foundry_h100 $V/llm_foundry_h100_large --holdout llm_foundry_h100_large --cluster "$OUT/dgx_h100_kernels.yaml" "${H100_SCALES[@]}"
row "H100 llm-foundry, fit on 8-64 GPUs (kernel curves), 128-512 GPUs held out" llmf_h100_scale_curves $V/llm_foundry_h100 $V/llm_foundry_h100_large --holdout llm_foundry_h100_large --cluster "$OUT/dgx_h100_kernels.yaml" --fix attention "${TRITON[@]}"
row "H100 llm-foundry 8-512 GPUs, 5-fold, kernel curves fitted" llmf_h100_all_curves $V/llm_foundry_h100 $V/llm_foundry_h100_large --cluster "$OUT/dgx_h100_kernels.yaml" --fix attention "${TRITON[@]}"
row "A100 Jean Zay (BigScience layout search), 5-fold, inter-node collectives fitted (--free)" jean_zay $V/bigscience_tr11_prequel --cluster "$JZ" --free collectives_inter_node
row "A100 Jean Zay (BigScience layout search), 5-fold, inter-node collectives alone (shipped)" jean_zay_network $V/bigscience_tr11_prequel --cluster "$JZ" --fix matmul attention memory_bandwidth --free collectives_inter_node
echo
echo "Held-out error by TP degree (bias = mean signed error; + = predicted faster than measured):"
echo
echo "| fit | TP | cases | held-out bias % | held-out mean \|err\| % | held-out max \|err\| % |"
echo "|---|---|---|---|---|---|"
cat "$BYTP"
echo
echo "Held-out error by GPU count (same terms):"
echo
echo "| fit | GPUs | cases | held-out bias % | held-out mean \|err\| % | held-out max \|err\| % |"
echo "|---|---|---|---|---|---|"
cat "$BYG"
# Training scales carried across sources: the scales fitted to one framework's runs, on the other
# framework's hosts (their own profile's kernel curves), predicting the other's runs, none of which
# the fit saw. NeMo's runs use cuDNN attention (the `attention` curves); torchtitan's of December
# 2024 and June 2025 FlashAttention-2 (`flash_kernel: fa2`, its own curve); a scale that carries
# over says the kernels' curves, not the scale, hold what separates the two.
scales_of() {  # fit args... -> "matmul attention"
  "$RP" fit "$@" "${SCALES[@]}" --format json |
    python3 -c 'import json, sys; f = json.load(sys.stdin)["fitted"]; print(f["training_scale.matmul"], f["training_scale.attention"])'
}
with_scales() {  # kernel-curve profile, matmul scale, attention scale, out
  awk -v m="$2" -v a="$3" '{ print } /^efficiency:$/ { printf "  training_scale: {matmul: %s, attention: %s}\n", m, a }' "$1" > "$4"
  [ "$(grep -c '^  training_scale:' "$4")" = 1 ] || { echo "corpus_heldout.sh: could not set the scales in $4" >&2; exit 1; }
}
cross() {  # label, where the scales were fitted, profile with the scales, validate dirs...
  local label=$1 where=$2 profile=$3; shift 3
  "$RP" validate "$@" --cluster "$profile" --format json | python3 -c '
import json, re, sys
j = json.load(sys.stdin)
scales = re.sub(r"[0-9.]+", lambda m: "{:.3f}".format(float(m.group())), sys.argv[2])
comparisons = sum(v["cases"] for v in j["by_source"].values())
print("| {} | {}{} | {} ({}) | **{:.2f}** | **{:.2f}** |".format(sys.argv[1], scales, sys.argv[3], j["case_count"],
      comparisons, j["mean_abs_error_pct"], j["max_abs_error_pct"]))
' "$label" "$(grep '^  training_scale:' "$profile" | sed 's/^  training_scale: //')" " $where"
}
read -r TT_M TT_A < <(scales_of $V/torchtitan_h100_fp8 $V/torchtitan_h100_bf16 --cluster "$OUT/grand_teton_h100_kernels.yaml")
read -r NEMO_M NEMO_A < <(scales_of $V/nemo_long_sequence_h100 --cluster "$OUT/dgx_h100_kernels.yaml")
with_scales "$OUT/dgx_h100_kernels.yaml" "$TT_M" "$TT_A" "$OUT/dgx_h100_torchtitan_scales.yaml"
with_scales "$OUT/grand_teton_h100_kernels.yaml" "$NEMO_M" "$NEMO_A" "$OUT/grand_teton_h100_nemo_scales.yaml"
# torchtitan's H200 runs on the H200's measured kernel curves, with the scales fitted on the
# project's own H200 steps (as shipped) and with both H100 fits' scales.
read -r H200_M H200_A < <(scales_of $V/h200_torch_step --cluster "$OUT/h200_kernels.yaml")
with_scales "$OUT/h200_kernels.yaml" "$H200_M" "$H200_A" "$OUT/h200_steps_scales.yaml"
with_scales "$OUT/h200_kernels.yaml" "$TT_M" "$TT_A" "$OUT/h200_torchtitan_scales.yaml"
with_scales "$OUT/h200_kernels.yaml" "$NEMO_M" "$NEMO_A" "$OUT/h200_nemo_scales.yaml"
echo
echo "Training scales carried across sources (fitted on one framework's runs, predicting the other's on their own hosts' kernel curves):"
echo
echo "| runs predicted (never fitted) | training scales {matmul, attention} and where they were fitted | runs (comparisons) | mean \|err\| % | max \|err\| % |"
echo "|---|---|---|---|---|"
cross "NeMo H100 (DGX H100, cuDNN attention), on dgx_h100's kernel curves" "fitted on torchtitan H100 FP8 + bf16" "$OUT/dgx_h100_torchtitan_scales.yaml" $V/nemo_long_sequence_h100
cross "torchtitan H100 FP8, bf16 (eager and compiled) and async TP (Grand Teton, FlashAttention-2), on grand_teton_h100's kernel curves" "fitted on NeMo H100" "$OUT/grand_teton_h100_nemo_scales.yaml" $V/torchtitan_h100_fp8 $V/torchtitan_h100_bf16 $V/torchtitan_h100_compile $V/torchtitan_h100_async_tp
cross "torchtitan H200 FP8 (WhiteFiber, FlashAttention-2), on h200's measured kernel curves" "fitted on the project's H200 steps (shipped)" "$OUT/h200_steps_scales.yaml" $V/torchtitan_h200_whitefiber
cross "torchtitan H200 FP8 (WhiteFiber, FlashAttention-2), on h200's measured kernel curves" "fitted on torchtitan H100 FP8 + bf16" "$OUT/h200_torchtitan_scales.yaml" $V/torchtitan_h200_whitefiber
cross "torchtitan H200 FP8 (WhiteFiber, FlashAttention-2), on h200's measured kernel curves" "fitted on NeMo H100" "$OUT/h200_nemo_scales.yaml" $V/torchtitan_h200_whitefiber
