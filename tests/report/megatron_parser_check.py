#!/usr/bin/env python3
"""Feeds `ringplan emit --format megatron` scripts to Megatron-LM's own argument parser.

For a few plan variants of a small experiment (ZeRO-3 = Megatron-FSDP; ZeRO-1 with TP, SP and
CP; PP with interleaving and full recompute), this
  1. writes the plan (`ringplan plan`), edits its layout, emits the Megatron-LM script;
  2. runs the script with a stand-in `torchrun` first on PATH that records the pretrain_gpt.py
     arguments and CUDA_DEVICE_MAX_CONNECTIONS exactly as the script passes them;
  3. parses those arguments with megatron.training.arguments.parse_args (every flag must exist,
     every value must have the parser's type and be one of its choices) and runs validate_args
     in the recorded environment with WORLD_SIZE = the plan's GPUs, which asserts among other
     things the FSDP checkpoint format and CUDA_DEVICE_MAX_CONNECTIONS;
  4. checks the validated arguments equal the plan's (parallel sizes including the DP size
     Megatron derives, virtual pipeline size, batch, sequence length, recompute, optimizer
     sharding).

Megatron-LM is not a Python package on PyPI in full (megatron-core lacks megatron.training), so
this needs a Megatron-LM checkout on PYTHONPATH (the pinned version is report/emit.hpp's
kMegatronVersion, core_v0.19.0) and its dependencies (torch, numpy, einops, packaging). Without
them it exits 77, which CTest reports as SKIPPED, and says what is missing.

Without a GPU, validate_args cannot ask the device its architecture; the check answers 9
(Hopper), the generation whose rules are strictest about CUDA_DEVICE_MAX_CONNECTIONS.

Usage: megatron_parser_check.py RINGPLAN EXPERIMENT.yaml WORK_DIR
       megatron_parser_check.py --dump-flags   (regenerates data/megatron_<version>_flags.txt)
"""
import contextlib
import io
import os
import re
import stat
import subprocess
import sys
import typing

SKIP = 77

# Layout variants: (name, mesh line, options overrides). Each must pass `ringplan emit`'s
# layout check on tests/report/data/small_experiment.yaml (8 GPUs, 8 layers, global batch 16).
VARIANTS = [
    ("zero3_fsdp", "{dp: 8, tp: 1, cp: 1, pp: 1}", {"zero_stage": "3", "recompute": "none"}),
    ("zero1_tp_sp_cp", "{dp: 2, tp: 2, cp: 2, pp: 1}",
     {"zero_stage": "1", "sequence_parallel": "true", "recompute": "selective"}),
    ("pp_interleaved", "{dp: 2, tp: 1, cp: 2, pp: 2}",
     {"zero_stage": "0", "interleave": "2", "recompute": "full"}),
    # Hierarchical CP: all-to-all in groups of 4 CP ranks, ring across the 2 groups (a2a+p2p;
    # A != R, so an order mistake in --hierarchical-context-parallel-sizes shows).
    ("cp_hybrid", "{dp: 1, tp: 1, cp: 8, pp: 1}",
     {"zero_stage": "1", "recompute": "selective", "cp_comm": "hybrid", "cp_a2a_size": "4"}),
    # Uneven pipelines: Megatron's first/last stage layer counts (1, 3, 3, 1 of the 8 layers) and
    # the embedding / loss slots ((8 + 2) / 2 = 5 slots per rank: 4 and 4 layers).
    ("pp_first_last", "{dp: 2, tp: 1, cp: 1, pp: 4}",
     {"zero_stage": "1", "recompute": "full", "pp_first_layers": "1", "pp_last_layers": "1"}),
    ("pp_slots", "{dp: 4, tp: 1, cp: 1, pp: 2}",
     {"zero_stage": "1", "recompute": "full", "pp_embedding_slot": "true", "pp_loss_slot": "true"}),
    # 8 layers on PP 2 x v 3 = 6 virtual stages: the cost model's split as a layout string.
    ("pp_layout", "{dp: 4, tp: 1, cp: 1, pp: 2}", {"zero_stage": "1", "recompute": "full", "interleave": "3"}),
    # The distributed optimizer's parameter all-gather behind the next forward.
    ("zero1_overlap_param_gather", "{dp: 4, tp: 2, cp: 1, pp: 1}",
     {"zero_stage": "1", "recompute": "selective", "overlap_param_gather": "true"}),
]

FAKE_TORCHRUN = """#!/usr/bin/env bash
# Stand-in for torchrun: records the pretrain_gpt.py arguments, one per NUL-terminated record.
out="$RINGPLAN_CHECK_OUT"
printf '%s' "${CUDA_DEVICE_MAX_CONNECTIONS-<unset>}" > "$out.env"
seen=0
: > "$out.args"
for a in "$@"; do
  if [ "$seen" = 1 ]; then printf '%s\\0' "$a" >> "$out.args"; fi
  if [ "$a" = pretrain_gpt.py ]; then seen=1; fi
done
"""


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def import_megatron():
    # Megatron-LM core_v0.19.0 imports typing.override (Python 3.12); on older Pythons the
    # runtime no-op of PEP 698 stands in, which changes nothing the parser does.
    if not hasattr(typing, "override"):
        typing.override = lambda f: f
    try:
        import megatron.training.arguments as arguments  # noqa: F401
    except Exception as e:  # ImportError, or a dependency failing at import time
        print(f"SKIP: Megatron-LM is not importable ({type(e).__name__}: {e}). Put a Megatron-LM checkout "
              "(core_v0.19.0) on PYTHONPATH with torch, numpy, einops and packaging installed to run this check.")
        sys.exit(SKIP)
    return arguments


def make_variant(plan_text, mesh, options):
    text = re.sub(r"(?m)^  mesh: \{.*\}$", f"  mesh: {mesh}", plan_text)
    for key, value in options.items():
        text, n = re.subn(rf"(?m)^(    {key}): .*$", rf"\1: {value}", text)
        if n == 0 and key == "cp_a2a_size":  # written only for cp_comm hybrid: add it
            text, n = re.subn(r"(?m)^(    cp_comm: .*)$", rf"\1\n    {key}: {value}", text)
        if n == 0 and (key.startswith("pp_") or key in ("overlap_param_gather", "dp_replicate")):
            # The pipeline split, the parameter-gather overlap, hybrid sharding: written only when set.
            text, n = re.subn(r"(?m)^(    tp_overlap: .*)$", rf"\1\n    {key}: {value}", text)
        if n != 1:
            fail(f"plan file has no options.{key} line to edit")
    # The prediction block stays as written (a plan file must have one): emit recomputes the
    # prediction from the experiment and the edited layout.
    return text


def expected_args(mesh, options, plan_text):
    """The validated Megatron arguments the plan means, from the plan's own values."""
    dp, tp, cp, pp = (int(re.search(rf"{k}: (\d+)", mesh).group(1)) for k in ("dp", "tp", "cp", "pp"))
    zero = int(options["zero_stage"])
    interleave = int(options.get("interleave", "1"))
    recompute = options["recompute"]

    def number(key):
        m = re.search(rf"(?m)^    {key}: (\d+)$", plan_text)
        if not m:
            fail(f"plan file has no {key}")
        return int(m.group(1))

    hybrid = {}
    if options.get("cp_comm") == "hybrid":
        a2a = int(options["cp_a2a_size"])
        hybrid = {"cp_comm_type": ["a2a+p2p"], "hierarchical_context_parallel_sizes": [a2a, cp // a2a]}
    split = {
        "decoder_first_pipeline_num_layers": int(options["pp_first_layers"]) if "pp_first_layers" in options else None,
        "decoder_last_pipeline_num_layers": int(options["pp_last_layers"]) if "pp_last_layers" in options else None,
        "account_for_embedding_in_pipeline_split": options.get("pp_embedding_slot") == "true",
        "account_for_loss_in_pipeline_split": options.get("pp_loss_slot") == "true",
    }
    return hybrid | split | {
        "tensor_model_parallel_size": tp,
        "pipeline_model_parallel_size": pp,
        "context_parallel_size": cp,
        "data_parallel_size": dp,  # validate_args derives it from WORLD_SIZE
        "virtual_pipeline_model_parallel_size": interleave if pp > 1 and interleave > 1 else None,
        "micro_batch_size": number("micro_batch"),
        "global_batch_size": number("global_batch"),
        "seq_length": number("seq_len"),
        "num_layers": number("layers"),
        "recompute_granularity": None if recompute == "none" else recompute,
        "sequence_parallel": tp > 1 and options.get("sequence_parallel") == "true",
        "use_distributed_optimizer": zero >= 1,
        "use_megatron_fsdp": zero >= 2,
        "overlap_param_gather": zero == 1 and dp * cp > 1 and options.get("overlap_param_gather") == "true",
    }


def dump_flags():
    import argparse
    arguments = import_megatron()
    parser = argparse.ArgumentParser(allow_abbrev=False)
    arguments.add_megatron_arguments(parser)
    flags = sorted({s for a in parser._actions for s in a.option_strings if s.startswith("--")})
    print("\n".join(flags))


def main():
    if sys.argv[1:] == ["--dump-flags"]:
        dump_flags()
        return
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    ringplan, experiment, work = sys.argv[1:]
    arguments = import_megatron()
    import megatron.training.arguments as margs
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    if not has_gpu:
        margs.get_device_arch_version = lambda: 9

    os.makedirs(work, exist_ok=True)
    bin_dir = os.path.join(work, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    fake = os.path.join(bin_dir, "torchrun")
    with open(fake, "w") as f:
        f.write(FAKE_TORCHRUN)
    os.chmod(fake, os.stat(fake).st_mode | stat.S_IEXEC)

    base_plan = os.path.join(work, "plan.yaml")
    subprocess.run([ringplan, "plan", experiment, "-o", base_plan], check=True, stdout=subprocess.DEVNULL)
    with open(base_plan) as f:
        plan_text = f.read()

    failures = 0
    for name, mesh, options in VARIANTS:
        plan = os.path.join(work, f"plan_{name}.yaml")
        variant_text = make_variant(plan_text, mesh, options)
        with open(plan, "w") as f:
            f.write(variant_text)
        script = os.path.join(work, f"launch_{name}.sh")
        r = subprocess.run([ringplan, "emit", plan, "--format", "megatron", "-o", script], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{name}: ringplan emit failed: {r.stderr.strip()}")
        rec = os.path.join(work, f"recorded_{name}")
        env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), RINGPLAN_CHECK_OUT=rec)
        env.pop("CUDA_DEVICE_MAX_CONNECTIONS", None)
        r = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{name}: the emitted script did not run: {r.stderr.strip()}")
        with open(rec + ".args") as f:
            args = [a for a in f.read().split("\0") if a]
        with open(rec + ".env") as f:
            max_connections = f.read()
        world = re.search(r"this plan needs (\d+) GPUs", open(script).read())
        world_size = world.group(1) if world else "8"

        sys.argv = ["pretrain_gpt.py"] + args
        try:
            parsed = arguments.parse_args()
        except SystemExit as e:
            print(f"FAIL {name}: Megatron's parser rejected the arguments (exit {e.code}): {' '.join(args)}")
            failures += 1
            continue
        saved = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK", "CUDA_DEVICE_MAX_CONNECTIONS")}
        os.environ["WORLD_SIZE"], os.environ["RANK"] = world_size, "0"
        if max_connections == "<unset>":
            os.environ.pop("CUDA_DEVICE_MAX_CONNECTIONS", None)
        else:
            os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] = max_connections
        parsed.world_size, parsed.rank = int(world_size), 0
        log = io.StringIO()  # validate_args prints every argument; shown only on failure
        try:
            with contextlib.redirect_stdout(log):
                arguments.validate_args(parsed, {})
            expected = expected_args(mesh, options, variant_text)
            wrong = [f"{k} = {getattr(parsed, k, '<absent>')!r}, plan says {v!r}"
                     for k, v in expected.items() if getattr(parsed, k, "<absent>") != v]
            if wrong:
                print(f"FAIL {name}: " + "; ".join(wrong))
                failures += 1
                continue
            print(f"ok {name}: {len(args)} arguments parsed and validated "
                  f"(WORLD_SIZE={world_size}, CUDA_DEVICE_MAX_CONNECTIONS={max_connections}); "
                  f"{len(expected)} validated arguments equal the plan's")
        except (AssertionError, ValueError, RuntimeError) as e:
            print(log.getvalue()[-4000:])
            print(f"FAIL {name}: validate_args: {type(e).__name__}: {e}")
            failures += 1
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    if failures:
        print(f"{len(VARIANTS) - failures} passed, {failures} failed")
        sys.exit(1)
    print(f"{len(VARIANTS)} passed, 0 failed")


if __name__ == "__main__":
    main()
