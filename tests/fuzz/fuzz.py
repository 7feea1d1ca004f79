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

Each mutant goes through the non-MPI readers: plan, simulate, validate, emit. A run fails the
test when it
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

    def run(self, args, mutant_path, desc, invalid):
        """Runs ringplan ARGS and checks the result; returns (rc, stdout)."""
        self.runs += 1
        cmd = [self.ringplan] + args
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_LIMIT_S, errors="replace")
        except subprocess.TimeoutExpired:
            self.fail(cmd, mutant_path, desc, f"hang: no exit within {RUN_LIMIT_S} s", "", "")
            return None, ""
        problems = []
        # 0 ok, 1 runtime failure, 2 bad input, 3 no layout fits (README "Exit status").
        if p.returncode < 0 or p.returncode not in (0, 1, 2, 3):
            problems.append(f"crash: exit status {p.returncode}")
        if "internal error" in p.stderr or "internal error" in p.stdout:
            problems.append("'internal error' in the output")
        # Exit 3 accepted the file (and printed its report): held to the same checks as exit 0.
        if p.returncode in (0, 3) and NONFINITE.search(p.stdout):
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ringplan")
    ap.add_argument("source_dir")
    ap.add_argument("work")
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--seed", type=int, default=20240607)
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
             [("cluster", p) for p in seeds_in("clusters")] + [("plan", plan_seed)] * 6 +
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
    if fz.failures:
        print(f"fuzz: {len(fz.failures)} FAILURES:")
        for f in fz.failures:
            print("  - " + f)
        return 1
    print("fuzz: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
