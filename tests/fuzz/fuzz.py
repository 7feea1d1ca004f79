#!/usr/bin/env python3
"""Deterministic mutation fuzzing of ringplan's config and plan readers.

Usage: fuzz.py RINGPLAN SOURCE_DIR WORKDIR [--count N] [--seed S]
       (env RINGPLAN_FUZZ_COUNT overrides --count; the asan preset runs 400 mutants, the cpu preset 1000)

Seeds: the shipped configs (configs/experiments, configs/models, configs/clusters, the
validation cases under configs/validation) and a plan file made by `ringplan plan`. Each mutant
changes one thing: a number becomes 0, -1, 2^63-1, 1e308, nan, inf or a string; a line is deleted
or duplicated; the file is cut after a random line. Mutants are written into a copy of configs/
so that relative references (model: ../models/x.yaml) still resolve; model and cluster mutants
are read through a wrapper experiment.

Each mutant goes through the non-MPI readers: plan, simulate, validate, emit. Then a second,
smaller phase (--runtime-count mutants, 0 to skip) mutates a tiny plan (cpu_small at 256 tokens,
one rank; one mutant in three sets a memory-setting size such as head_dim to 2^30 or 2^31, one in
six puts a byte that is not UTF-8 into a name) and gives each mutant to `report` (with and without --run), and, when --mpiexec is
given, to `run` at np 1 (an MPI singleton, without mpirun, which takes 2 s to end a job that
exits non-zero: one layer and one step, or --scope attention, one iteration) or to
`calibrate --plan` at np 2 (under mpirun) (two block sizes, one repetition, -o into WORKDIR); a few mutants of a
`run --format json` output go to `report --run`. These runs measure, so their printed numbers are
not checked for nan/inf; everything else below applies. A run fails the test when it
  - ends by a signal (crash) or exits with a code other than 0, 1, 2, 3 (3: a valid file whose
    layouts do not fit in memory -- plan found none, simulate's does not -- a valid outcome),
  - takes longer than the per-run limit (hang),
  - prints "internal error",
  - exits 0 or 3 with "nan" or "inf" among the numbers it printed,
  - exits 0 or 3 on a mutant that is invalid for sure: a number replaced by -1, 2^63-1, 1e308, nan,
    inf or a string (every number ringplan reads is bounded, finite and a number), a duplicated
    key, or a ringplan-written file whose end marker was cut off,
  - exits 1 (a runtime failure) on a mutant: reading a file is bad input or success.
The mutation sequence depends only on --seed and the seed files, so a failure reproduces; the
failing mutant is kept in WORKDIR/failures/ with the command and output.
"""
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

PLAN_MARKER = "# end of ringplan plan"
RUN_LIMIT_S = 10.0
MPI_RUN_LIMIT_S = 60.0  # mpirun start-up and a measurement, on a loaded 2-core CI machine
NUM = re.compile(r"(?<![\w.+-])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")
NONFINITE = re.compile(r"(?i)(?<![\w.])[-+]?(?:nan|inf|infinity)(?![\w])")
KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w.]*)\s*:(.*)$")
# Number replacements: (text, invalid for sure)
NUMBER_MUTATIONS = [("0", False), ("-1", True), ("9223372036854775807", True), ("1e308", True),
                    (".nan", True), ("nan", True), (".inf", True), ("-.inf", True), ("abc", True),
                    ('"12"', True)]
TEXT_KEYS = {"name", "source", "note", "notes", "description", "title"}


def code_part(line):
    """The line without its comment (a '#' at the start or after a blank, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def numeric_value_lines(lines):
    """Indices of `key: <numbers>` lines whose value holds only numbers (scalars, flow lists or
    flow maps of numbers): replacing one of them with -1, nan, ... makes the file invalid."""
    out = []
    for i, line in enumerate(lines):
        code = code_part(line.rstrip("\n"))
        m = KEY_LINE.match(code)
        if not m or m.group(2) in TEXT_KEYS:
            continue
        value = m.group(3)
        if not NUM.search(value):
            continue
        rest = re.sub(r"\w+\s*:", "", NUM.sub("", value))
        if re.fullmatch(r"[\s,\[\]{}]*", rest):
            out.append(i)
    return out


def key_lines(lines):
    """Indices of block-mapping key lines (not comments, not list items): duplicating one gives a
    duplicate key."""
    return [i for i, l in enumerate(lines) if KEY_LINE.match(code_part(l.rstrip("\n")))]


def mutate(text, rng):
    """Returns (mutant text, description, invalid for sure)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    kind = rng.choice(["number"] * 6 + ["delete", "duplicate", "truncate"])
    invalid = False
    if kind == "number":
        idx = numeric_value_lines(lines)
        if not idx:
            kind = "delete"
        else:
            i = rng.choice(idx)
            code = code_part(lines[i].rstrip("\n"))
            key_end = code.index(":") + 1
            matches = list(NUM.finditer(code, key_end))
            m = rng.choice(matches)
            new, invalid = rng.choice(NUMBER_MUTATIONS)
            lines[i] = lines[i][: m.start()] + new + lines[i][m.end():]
            desc = f"line {i + 1}: number {m.group(0)} -> {new}"
    if kind == "delete":
        i = rng.randrange(len(lines))
        desc = f"line {i + 1} deleted: {lines[i].strip()!r}"
        del lines[i]
    elif kind == "duplicate":
        idx = key_lines(lines)
        i = rng.choice(idx)
        desc = f"line {i + 1} duplicated: {lines[i].strip()!r}"
        lines.insert(i + 1, lines[i])
        invalid = True
    elif kind == "truncate":
        k = rng.randrange(1, len(lines))
        desc = f"cut after line {k} of {len(lines)}"
        lines = lines[:k]
    mutant = "".join(lines)
    # A ringplan-written file without its end marker line is refused, whatever else it holds.
    if PLAN_MARKER in text and PLAN_MARKER not in [l.rstrip() for l in mutant.splitlines()]:
        invalid = True
    return mutant, desc, invalid


class Fuzzer:
    def __init__(self, ringplan, work):
        self.ringplan = ringplan
        self.work = work
        self.failures = []
        self.runs = 0

    def run(self, args, mutant_path, desc, invalid, launcher=None, measures=False):
        """Runs ringplan ARGS (an MPI command when `launcher` is not None: under it, e.g. [mpirun,
        -np, 2], or [] for a singleton) and checks the result; returns (rc, stdout). `measures`: the
        output holds measurements, not checked for non-finite numbers."""
        self.runs += 1
        cmd = (launcher or []) + [self.ringplan] + args
        limit = RUN_LIMIT_S if launcher is None else MPI_RUN_LIMIT_S
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, errors="replace")
        except subprocess.TimeoutExpired:
            self.fail(cmd, mutant_path, desc, f"hang: no exit within {limit} s", "", "")
            return None, ""
        problems = []
        # 0 ok, 1 runtime failure, 2 bad input, 3 no layout fits (README "Exit status").
        if p.returncode < 0 or p.returncode not in (0, 1, 2, 3):
            problems.append(f"crash: exit status {p.returncode}")
        if launcher is not None and re.search(r"exited on signal|terminated by signal|Segmentation fault", p.stderr):
            problems.append("crash: a rank ended by a signal")
        if "internal error" in p.stderr or "internal error" in p.stdout:
            problems.append("'internal error' in the output")
        # Exit 3 accepted the file (and printed its report): held to the same checks as exit 0.
        if p.returncode in (0, 3) and not measures and NONFINITE.search(p.stdout):
            problems.append(f"non-finite number in the output: {NONFINITE.search(p.stdout).group(0)!r}")
        if p.returncode in (0, 3) and invalid:
            problems.append(f"exit {p.returncode} on an invalid file")
        if p.returncode == 1:
            problems.append("exit 1 (runtime failure) while reading a file: bad input must exit 2")
        if problems:
            self.fail(cmd, mutant_path, desc, "; ".join(problems), p.stdout, p.stderr)
        return p.returncode, p.stdout

    def fail(self, cmd, mutant_path, desc, why, out, err):
        n = len(self.failures)
        keep = os.path.join(self.work, "failures", f"{n:03d}_{os.path.basename(mutant_path)}")
        os.makedirs(os.path.dirname(keep), exist_ok=True)
        shutil.copy(mutant_path, keep)
        with open(keep + ".txt", "w") as f:
            f.write(f"mutation: {desc}\ncommand: {' '.join(cmd)}\nwhy: {why}\n--- stdout\n{out[-4000:]}\n"
                    f"--- stderr\n{err[-4000:]}\n")
        self.failures.append(f"{why}\n    mutation: {desc}\n    command: {' '.join(cmd)}\n    kept: {keep}\n"
                             f"    stderr: {err.strip()[-400:]}")


def mutate_json(value, rng):
    """One numeric leaf of a JSON document replaced by -1, 0, 1e308, a string or null; returns
    (document, description)."""
    leaves = []

    def walk(v, path):
        if isinstance(v, dict):
            for k in v:
                walk(v[k], path + [k])
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, path + [i])
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            leaves.append(path)

    walk(value, [])
    path = rng.choice(leaves)
    new = rng.choice([-1, 0, 1e308, "abc", None])
    target = value
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = new
    return value, f"{'.'.join(map(str, path))} -> {json.dumps(new)}"


# Sizes that set how much memory a run allocates, and values the loaders accept (counts are at most
# 2^31): no host holds such a layer, so `run` must refuse it before allocating (exit 2), not fail
# to allocate. Sizes that set only the run's duration (global_batch, layers) are left alone.
SIZE_KEYS = re.compile(r"^(\s*(?:head_dim|micro_batch|heads|hidden|ffn_hidden|vocab|seq_len):\s*)\d+\s*$")


def mutate_size(text, rng):
    """One memory-setting size of a plan set to 2^30 or 2^31; returns (text, description, False)."""
    lines = text.splitlines(keepends=True)
    idx = [i for i, l in enumerate(lines) if SIZE_KEYS.match(l.rstrip("\n"))]
    i = rng.choice(idx)
    new = rng.choice(["1073741824", "2147483648"])
    desc = f"line {i + 1}: {lines[i].strip()} -> {new}"
    lines[i] = SIZE_KEYS.sub(lambda m: m.group(1) + new, lines[i].rstrip("\n")) + "\n"
    return "".join(lines), desc, False


def mutate_name_bytes(text, rng):
    """A byte that is not UTF-8 (Latin-1 'e' acute, or 0xff) put into a name: invalid for sure, since
    names travel into JSON and HTML. Returns (text, description, True); the raw byte is a lone
    surrogate, written with errors="surrogateescape"."""
    lines = text.splitlines(keepends=True)
    idx = [i for i, l in enumerate(lines) if re.match(r"^\s*name:\s*\S", l)]
    i = rng.choice(idx)
    byte = rng.choice([0xE9, 0xFF])
    lines[i] = re.sub(r"(name:\s*\"?)", lambda m: m.group(1) + chr(0xDC00 + byte), lines[i], count=1)
    return "".join(lines), f"line {i + 1}: byte 0x{byte:02x} put into {lines[i].strip()!r}", True


def runtime_phase(a, cfg, fz):
    """Mutants of a tiny one-rank plan through report, and run / calibrate under mpirun."""
    rng = random.Random(a.seed + 1)  # its own sequence: the first phase's mutants stay the same
    out = os.path.join(a.work, "out")
    os.makedirs(out, exist_ok=True)
    exp_dir = os.path.join(cfg, "experiments")
    tiny = os.path.join(exp_dir, "_tiny.yaml")
    text = open(os.path.join(exp_dir, "cpu_small.yaml")).read()
    with open(tiny, "w") as f:
        f.write(re.sub(r"(?m)^(\s*seq_len:) \d+", r"\1 256", text))
    seed_plan = os.path.join(exp_dir, "_tiny_plan.yaml")
    subprocess.run([a.ringplan, "plan", tiny, "--gpus", "1", "--top", "1", "-o", seed_plan], check=True,
                   capture_output=True)
    np2 = None
    run_json = None
    if a.mpiexec:
        flags = a.mpi_flags.split()
        np2 = [a.mpiexec, "-np", "2"] + flags
        p = subprocess.run([a.ringplan, "run", seed_plan, "--scope", "attention", "--iters", "1", "--warmup",
                                  "0", "--format", "json"], capture_output=True, text=True, timeout=MPI_RUN_LIMIT_S)
        if p.returncode != 0:
            raise SystemExit(f"fuzz: the seed run failed (exit {p.returncode}):\n{p.stderr}")
        run_json = os.path.join(out, "run.json")
        with open(run_json, "w") as f:
            f.write(p.stdout)
    original = open(seed_plan).read()
    for n in range(a.runtime_count):
        if n % 3 == 1:
            mutant, desc, invalid = mutate_size(original, rng)
        elif n % 6 == 5:
            mutant, desc, invalid = mutate_name_bytes(original, rng)
        else:
            mutant, desc, invalid = mutate(original, rng)
        desc = f"runtime #{n} _tiny_plan.yaml: {desc}"
        mpath = os.path.join(exp_dir, "_mutant_tiny_plan.yaml")
        with open(mpath, "w", errors="surrogateescape") as f:  # raw bytes of mutate_name_bytes
            f.write(mutant)
        try:
            report = ["report", mpath, "-o", os.path.join(out, "report.html")]
            fz.run(report + (["--run", run_json] if run_json and n % 2 else []), mpath, desc, invalid)
            if not a.mpiexec:
                continue
            if n % 8 == 7:
                fz.run(["calibrate", "--plan", mpath, "--tokens", "32,64", "--reps", "1", "-o",
                        os.path.join(out, "profile.yaml")], mpath, desc, invalid, launcher=np2, measures=True)
            elif n % 2 == 0:
                fz.run(["run", mpath, "--layers", "1", "--steps", "1", "--warmup", "0"], mpath, desc, invalid,
                       launcher=[], measures=True)
            else:
                fz.run(["run", mpath, "--scope", "attention", "--iters", "1", "--warmup", "0", "--format", "json"],
                       mpath, desc, invalid, launcher=[], measures=True)
        finally:
            os.remove(mpath)
    # The run output that `report --run` reads, one number at a time.
    if run_json:
        original_run = json.load(open(run_json))
        for n in range(max(2, a.runtime_count // 3)):
            doc, what = mutate_json(json.loads(json.dumps(original_run)), rng)
            mpath = os.path.join(out, "_mutant_run.json")
            with open(mpath, "w") as f:
                json.dump(doc, f)
            fz.run(["report", seed_plan, "--run", mpath, "-o", os.path.join(out, "report.html")], mpath,
                   f"run json #{n}: {what}", False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ringplan")
    ap.add_argument("source_dir")
    ap.add_argument("work")
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--seed", type=int, default=20240607)
    ap.add_argument("--runtime-count", type=int, default=24,
                    help="tiny-plan mutants through report, and run/calibrate with --mpiexec (0: none)")
    ap.add_argument("--mpiexec", default="", help="mpirun for the run and calibrate mutants (none: skipped)")
    ap.add_argument("--mpi-flags", default="", help="extra mpirun flags, space separated")
    a = ap.parse_args()
    count = int(os.environ.get("RINGPLAN_FUZZ_COUNT", a.count))
    rng = random.Random(a.seed)

    shutil.rmtree(a.work, ignore_errors=True)
    cfg = os.path.join(a.work, "configs")
    shutil.copytree(os.path.join(a.source_dir, "configs"), cfg)
    fz = Fuzzer(a.ringplan, a.work)

    # The plan seed: made by this ringplan, so it carries the current format and end marker.
    plan_seed = os.path.join(cfg, "experiments", "_seed_plan.yaml")
    subprocess.run([a.ringplan, "plan", os.path.join(cfg, "experiments", "cpu_small_cp4.yaml"), "--top", "1",
                    "-o", plan_seed], check=True, capture_output=True)
    # A cluster with oversubscribed switch groups (inter_node.group_nodes / oversubscription: no
    # shipped profile sets them), made from dgx_h100.yaml.
    switch_seed = os.path.join(cfg, "clusters", "_seed_switch_groups.yaml")
    with open(os.path.join(cfg, "clusters", "dgx_h100.yaml")) as f:
        h100 = f.read()
    with open(switch_seed, "w") as f:
        f.write(re.sub(r"(?m)^(  latency_us: 6\b.*)$", r"\1\n  group_nodes: 2\n  oversubscription: 3", h100, count=1))
    # A wrapper experiment reads model and cluster mutants (64 H100-class GPUs, default.yaml's search).
    wrapper_text = open(os.path.join(cfg, "experiments", "default.yaml")).read()

    def seeds_in(sub):
        d = os.path.join(cfg, sub)
        return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".yaml") and not f.startswith("_"))

    validation = []
    for root, _, files in os.walk(os.path.join(cfg, "validation")):
        validation += [os.path.join(root, f) for f in files if f.endswith(".yaml")]
    validation.sort()
    seeds = ([("experiment", p) for p in seeds_in("experiments")] + [("model", p) for p in seeds_in("models")] +
             [("cluster", p) for p in seeds_in("clusters")] + [("cluster", switch_seed)] * 3 +
             [("plan", plan_seed)] * 6 +
             [("validation", p) for p in validation[::4]])

    start = time.time()
    for n in range(count):
        kind, seed_path = seeds[n % len(seeds)]
        original = open(seed_path).read()
        mutant, desc, invalid = mutate(original, rng)
        desc = f"#{n} {os.path.relpath(seed_path, cfg)}: {desc}"
        folder = os.path.dirname(seed_path)
        mpath = os.path.join(folder, f"_mutant_{os.path.basename(seed_path)}")
        with open(mpath, "w") as f:
            f.write(mutant)
        try:
            if kind in ("model", "cluster"):
                rel = f"../{'models' if kind == 'model' else 'clusters'}/{os.path.basename(mpath)}"
                text = re.sub(rf"(?m)^{kind}: .*$", f"{kind}: {rel}", wrapper_text)
                target = os.path.join(cfg, "experiments", "_wrapper.yaml")
                with open(target, "w") as f:
                    f.write(text)
            else:
                target = mpath
            if kind == "plan":
                fz.run(["simulate", target], mpath, desc, invalid)
                fz.run(["emit", target, "--format", "megatron"], mpath, desc, invalid)
                fz.run(["emit", target, "--format", "torchtitan", "--target", "toml"], mpath, desc, invalid)
            elif kind == "validation":
                fz.run(["validate", target, "--format", "json"], mpath, desc, invalid)
            else:
                rc, out = fz.run(["plan", target, "--top", "3", "--format", "json"], mpath, desc, invalid)
                if rc == 0:
                    m = json.loads(out)["best"]["mesh"]
                    mesh = ",".join(f"{k}={m[k]}" for k in ("dp", "tp", "cp", "pp"))
                    fz.run(["simulate", target, "--mesh", mesh, "--format", "json"], mpath, desc, invalid)
        finally:
            os.remove(mpath)
    elapsed = time.time() - start
    print(f"fuzz: {count} mutants, {fz.runs} runs in {elapsed:.1f} s, seed {a.seed}")
    if a.runtime_count > 0:
        runs_before, start = fz.runs, time.time()
        runtime_phase(a, cfg, fz)
        print(f"fuzz: {a.runtime_count} tiny-plan mutants (report{', run, calibrate' if a.mpiexec else ''}), "
              f"{fz.runs - runs_before} runs in {time.time() - start:.1f} s")
    if fz.failures:
        print(f"fuzz: {len(fz.failures)} FAILURES:")
        for f in fz.failures:
            print("  - " + f)
        return 1
    print("fuzz: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
