#!/usr/bin/env python3
"""Feeds `ringplan emit --format torchtitan` output to torchtitan's own config loader.

For a few plan variants of a Llama-3-8B experiment (FSDP ZeRO-3 with full recompute; ZeRO-1 with
TP, SP and CP and selective recompute; interleaved PP with CP and DDP, clip_grad 0.5, eager element-wise ops), this
  1. writes the plan (`ringplan plan`), edits its layout, emits the torchtitan config;
  2. loads it with the loader `torchtitan.train` itself uses, torchtitan.config.ConfigManager:
       --target toml    (torchtitan v0.2.2, report/emit.hpp kTorchtitanTomlCommit):
                        parse_args(["--job.config_file", FILE]) -> JobConfig; the loader rejects
                        keys that are not JobConfig fields and tyro checks the value types;
       --target python  (torchtitan main at kTorchtitanPythonCommit): the emitted module is put
                        on sys.path and loaded as parse_args(["--module", MODULE, "--config",
                        "ringplan_plan"]), which imports it and calls ringplan_plan() to build
                        the Trainer.Config;
  3. checks the loaded config's fields equal the plan's (parallel degrees and FSDP resharding,
     batch, sequence length, activation checkpointing, max_norm, compile.enable) and builds torchtitan's
     ParallelDims from it with WORLD_SIZE = the plan's GPUs (ParallelDims validates the degrees
     multiply to the world size; no device mesh is built, so no GPU or process group is needed).

The two torchtitan versions are both the package `torchtitan`, so one run checks one target, with
that version's checkout on PYTHONPATH (torchtitan is not installed from PyPI at these commits) and
its import-time dependencies installed (torch, tyro, tokenizers, torchdata; main also spmd_types,
grain, torch_checkpointing, datasets, safetensors, tensorboard). Without them, or with the other
version importable, it exits 77, which CTest reports as SKIPPED, and says what is missing.

Usage: torchtitan_config_check.py --target toml|python RINGPLAN LLAMA3_8B_EXPERIMENT.yaml WORK_DIR
"""
import contextlib
import importlib
import io
import os
import re
import subprocess
import sys

SKIP = 77

# Layout variants: (name, mesh line, options overrides, training lines added). Each must pass
# `ringplan emit`'s checks on tests/report/data/llama3_8b_experiment.yaml (8 GPUs, 32 layers,
# global batch 16, seq_len 8192) for both targets.
VARIANTS = [
    ("zero3_fsdp_full", "{dp: 8, tp: 1, cp: 1, pp: 1}", {"zero_stage": "3", "recompute": "full"}, {}),
    ("zero1_tp_sp_cp", "{dp: 2, tp: 2, cp: 2, pp: 1}",
     {"zero_stage": "1", "sequence_parallel": "true", "recompute": "selective"}, {}),
    ("pp_interleaved_ddp", "{dp: 2, tp: 1, cp: 2, pp: 2}",
     {"zero_stage": "0", "interleave": "2", "recompute": "none"}, {"clip_grad": "0.5", "elementwise": "eager"}),
    ("fp8_tp_async", "{dp: 4, tp: 2, cp: 1, pp: 1}",
     {"zero_stage": "3", "sequence_parallel": "true", "recompute": "full", "tp_overlap": "pipelined"}, {"fp8": "true"}),
]


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def skip(msg):
    print(f"SKIP: {msg}")
    sys.exit(SKIP)


def import_torchtitan(target):
    need = ("torchtitan v0.2.2 (commit 73a0e6979dd10b6b1904098eb3c8f62c18ab87ce)" if target == "toml"
            else "torchtitan main at commit b5bcd76c66d0acb1a08b176d9639425bc55e0b2a")
    deps = ("torch, tyro, tokenizers and torchdata" if target == "toml" else
            "torch, tyro, tokenizers, spmd_types==0.2.3, grain==0.2.18, torch_checkpointing, datasets, "
            "safetensors and tensorboard")
    hint = f"Put a checkout of {need} on PYTHONPATH with {deps} installed to run this check."
    try:
        config = importlib.import_module("torchtitan.config")
    except Exception as e:  # ImportError, or a dependency failing at import time
        skip(f"torchtitan is not importable ({type(e).__name__}: {e}). {hint}")
    # v0.2.x exports JobConfig (the TOML job config); main replaced it with Trainer.Config.
    is_toml_release = hasattr(config, "JobConfig")
    if is_toml_release != (target == "toml"):
        skip(f"the importable torchtitan ({os.path.dirname(os.path.dirname(config.__file__))}) is the "
             f"{'TOML release' if is_toml_release else 'Python-config version'}, not the one "
             f"--target {target} is checked against. {hint}")
    try:
        if target == "python":
            importlib.import_module("torchtitan.models.llama3.config_registry")
        dims = importlib.import_module("torchtitan.distributed.parallel_dims")
    except Exception as e:
        skip(f"torchtitan's config registry does not import ({type(e).__name__}: {e}). {hint}")
    return config, dims


def make_variant(plan_text, mesh, options, training):
    text, n = re.subn(r"(?m)^  mesh: \{.*\}$", f"  mesh: {mesh}", plan_text)
    if n != 1:
        fail("plan file has no mesh line to edit")
    for key, value in options.items():
        text, n = re.subn(rf"(?m)^(    {key}): .*$", rf"\1: {value}", text)
        if n != 1:
            fail(f"plan file has no options.{key} line to edit")
    for key, value in training.items():
        # Added after the last line of experiment.training (its `causal` line).
        text, n = re.subn(r"(?m)^(    causal: .*)$", rf"\1\n    {key}: {value}", text)
        if n != 1:
            fail("plan file has no training.causal line to add training settings after")
    # The prediction block stays as written: emit recomputes the prediction from the
    # experiment and the edited layout.
    return text


def plan_number(text, key):
    m = re.search(rf"(?m)^    {key}: (\S+)$", text)
    if not m:
        fail(f"plan file has no training.{key}")
    return float(m.group(1)) if "." in m.group(1) else int(m.group(1))


def expected_fields(target, mesh, options, training, plan_text):
    """The config fields the plan means, from the plan's own values (not from emit's code)."""
    dp, tp, cp, pp = (int(re.search(rf"{k}: (\d+)", mesh).group(1)) for k in ("dp", "tp", "cp", "pp"))
    zero = int(options["zero_stage"])
    mb = plan_number(plan_text, "micro_batch")
    interleave = int(options.get("interleave", "1"))
    seq = plan_number(plan_text, "seq_len")
    gbs = plan_number(plan_text, "global_batch")
    m = gbs // (dp * mb)  # micro-batches per DP replica per step
    # torchtitan's DP = replicate (DDP) x shard (FSDP); any ZeRO stage >= 1 is FSDP over DP,
    # with parameters resharded after forward only for ZeRO-3.
    exp = {
        "parallelism.data_parallel_replicate_degree": dp if zero == 0 else 1,
        "parallelism.data_parallel_shard_degree": 1 if zero == 0 else dp,
        "parallelism.fsdp_reshard_after_forward": {0: "default", 1: "never", 2: "never", 3: "always"}[zero],
        "parallelism.tensor_parallel_degree": tp,
        "parallelism.context_parallel_degree": cp,
        "parallelism.pipeline_parallel_degree": pp,
        "training.max_norm": float(training.get("clip_grad", "1.0")),
        "training.mixed_precision_param": "bfloat16",
        # The plan's element-wise ops: fused = torch.compile on, eager = off.
        "compile.enable": training.get("elementwise", "fused") != "eager",
    }
    if cp > 1:
        exp["parallelism.context_parallel_load_balancer"] = "headtail"  # zigzag
    if pp > 1:
        exp["parallelism.pipeline_parallel_schedule"] = "Interleaved1F1B" if interleave > 1 else "1F1B"
        exp["parallelism.pipeline_parallel_layers_per_stage"] = plan_number(plan_text, "layers") // (pp * interleave)
        exp["parallelism.pipeline_parallel_first_stage_less_layers"] = 0
        exp["parallelism.pipeline_parallel_last_stage_less_layers"] = 0
    recompute = options["recompute"]
    # Async TP: written whatever TP is, on only for pipelined TP with compile.
    async_tp = tp > 1 and options.get("tp_overlap") == "pipelined" and training.get("elementwise", "fused") != "eager"
    exp["parallelism.enable_async_tensor_parallel" if target == "toml" else "compile.enable_async_tensor_parallel"] = async_tp
    if target == "toml" and training.get("fp8") == "true":
        # The Float8 converter by its registered name; the output layer stays in 16 bits.
        exp["model.converters"] = ["quantize.linear.float8"]
        exp["quantize.linear.float8.filter_fqns"] = ["output"]
    if target == "toml":
        exp["training.local_batch_size"] = mb * m if pp > 1 else mb
        exp["training.global_batch_size"] = gbs
        exp["training.seq_len"] = seq
        exp["activation_checkpoint.mode"] = recompute
        if recompute == "selective":
            exp["activation_checkpoint.selective_ac_option"] = "op"
        exp["model.name"] = "llama3"
        exp["model.flavor"] = "8B"
        if pp > 1:
            exp["parallelism.pipeline_parallel_microbatch_size"] = mb
    else:
        exp["training.num_tokens_per_microbatch_per_dp_rank"] = mb * seq
        exp["training.num_tokens_per_train_step"] = gbs * seq
        exp["training.max_context_length"] = seq
        exp["activation_checkpoint"] = {"none": None, "full": "FullAC.Config", "selective": "SelectiveAC.Config"}[recompute]
        if tp > 1:
            exp["parallelism.enable_sequence_parallel"] = options.get("sequence_parallel") == "true"
        if pp > 1:
            exp["parallelism.num_pp_microbatches"] = m
            # Trainer.Config refuses PP while CUDA graphs are on (the default).
            exp["training.disable_cuda_graphs"] = True
    return exp, dp * tp * cp * pp


def field_value(config, path):
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def load_toml(config_mod, path):
    return config_mod.ConfigManager().parse_args(["--job.config_file", path])


def load_python(config_mod, path, name):
    # The loader imports `--module` as a fully qualified module name (it first tries
    # MODULE.config_registry, then MODULE) and calls the `--config` function.
    sys.path.insert(0, os.path.dirname(path))
    try:
        return config_mod.ConfigManager().parse_args(["--module", name, "--config", "ringplan_plan"])
    finally:
        sys.path.pop(0)


def main():
    args = sys.argv[1:]
    if len(args) != 5 or args[0] != "--target" or args[1] not in ("toml", "python"):
        print(__doc__)
        sys.exit(2)
    target, ringplan, experiment, work = args[1:]
    config_mod, dims_mod = import_torchtitan(target)
    from torchtitan.tools.logging import logger
    logger.setLevel("ERROR")  # the loader warns that the tokenizer assets are absent, which is expected

    os.makedirs(work, exist_ok=True)
    base_plan = os.path.join(work, "plan.yaml")
    subprocess.run([ringplan, "plan", experiment, "-o", base_plan], check=True, stdout=subprocess.DEVNULL)
    with open(base_plan) as f:
        plan_text = f.read()

    failures = 0
    for name, mesh, options, training in VARIANTS:
        variant_text = make_variant(plan_text, mesh, options, training)
        plan = os.path.join(work, f"plan_{name}.yaml")
        with open(plan, "w") as f:
            f.write(variant_text)
        module = f"ringplan_plan_{target}_{name}"
        out = os.path.join(work, module + (".toml" if target == "toml" else ".py"))
        r = subprocess.run([ringplan, "emit", plan, "--format", "torchtitan", "--target", target, "-o", out],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{name}: ringplan emit failed: {r.stderr.strip()}")
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                config = load_toml(config_mod, out) if target == "toml" else load_python(config_mod, out, module)
        except (Exception, SystemExit) as e:  # tyro exits on a type error
            if target == "python" and training.get("fp8") == "true" and "float8 is only supported on" in str(e):
                # main builds the Float8 converter while the config loads, and the converter
                # checks the GPU (SM89 or later): reaching that check means the module, its
                # imports and the converter's config were accepted; without such a GPU the
                # other fields cannot be read.
                print(f"ok {name}: {os.path.basename(out)} loaded up to the Float8 converter's GPU check "
                      f"(no SM89 GPU here): {e}")
                continue
            print(log.getvalue()[-4000:])
            print(f"FAIL {name}: torchtitan's ConfigManager rejected {out}: {type(e).__name__}: {e}")
            failures += 1
            continue

        expected, world = expected_fields(target, mesh, options, training, variant_text)
        wrong = []
        for path, want in expected.items():
            got = field_value(config, path)
            if path == "activation_checkpoint" and got is not None:
                got = f"{type(got).__qualname__}"
            if got != want or type(got) is not type(want):
                wrong.append(f"{path} = {got!r}, plan says {want!r}")
        # torchtitan's own degree arithmetic, as its trainer builds it from the config.
        p = config.parallelism
        try:
            if target == "toml":
                dims = dims_mod.ParallelDims(
                    dp_shard=p.data_parallel_shard_degree, dp_replicate=p.data_parallel_replicate_degree,
                    cp=p.context_parallel_degree, tp=p.tensor_parallel_degree, pp=p.pipeline_parallel_degree,
                    ep=p.expert_parallel_degree, etp=p.expert_tensor_parallel_degree, world_size=world)
            else:
                dims = dims_mod.ParallelDims.from_config(p, world)
        except (AssertionError, ValueError) as e:
            wrong.append(f"ParallelDims(world_size={world}) rejected the degrees: {e}")
            dims = None
        if wrong:
            print(f"FAIL {name}: " + "; ".join(wrong))
            failures += 1
            continue
        print(f"ok {name}: {len(expected)} fields of {os.path.basename(out)} loaded by torchtitan's ConfigManager "
              f"equal the plan's; ParallelDims(dp_replicate={dims.dp_replicate}, dp_shard={dims.dp_shard}, "
              f"cp={dims.cp}, tp={dims.tp}, pp={dims.pp}, world_size={world}) valid")
    if failures:
        print(f"{len(VARIANTS) - failures} passed, {failures} failed")
        sys.exit(1)
    print(f"{len(VARIANTS)} passed, 0 failed")


if __name__ == "__main__":
    main()
