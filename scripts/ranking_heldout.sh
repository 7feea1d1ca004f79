#!/usr/bin/env bash
# Held-out layout ranking: for each group of measured runs that differ only in layout (the groups
# `ringplan validate` prints under "ranking"), fit the profile on every OTHER case of the folder
# (`ringplan fit --holdout`), then rank the held-out group with that fit. The group's own timings
# never reach the profile that ranks it. Prints one markdown row per fit method: mean regret of
# the model's pick against the measured best, the Megatron rule of thumb's regret, pairs ordered
# as measured and the mean Spearman over groups of >= 3 cases; every number is computed here by
# the project. BASE (optional) is the profile every fit starts from and the first row ranks
# with, nothing fitted; it must not have been fitted to the folder's cases itself (the shipped
# jean_zay_a100_80gb was: use the published network benchmark's profile, as
# scripts/corpus_heldout.sh writes it to build/cpu/fit/jean_zay_a100_80gb_published_network.yaml).
# Usage: scripts/ranking_heldout.sh [path/to/ringplan] [folder] [BASE.yaml]
set -euo pipefail
cd "$(dirname "$0")/.."
RP=${1:-build/cpu/cli/ringplan}
DIR=${2:-configs/validation/bigscience_tr11_prequel}
BASE=${3:-}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python3 - "$RP" "$DIR" "$WORK" "$BASE" <<'PY'
import json, os, re, subprocess, sys

rp, folder, work, base = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
on_base = ["--cluster", base] if base else []

def run(args):
    r = subprocess.run([rp] + args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ringplan {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout

shipped = json.loads(run(["validate", folder, "--format", "json"] + on_base))
path_of = {c["name"]: c["path"] for c in shipped["cases"]}
groups = shipped["ranking"]["groups"]

def copy_case(path, dest_dir):
    # The case's model/cluster paths are relative to its folder: make them absolute in the copy.
    base = os.path.dirname(os.path.abspath(path))
    text = open(path).read()
    def absolute(m):
        return f"{m.group(1)}{os.path.normpath(os.path.join(base, m.group(2)))}"
    text = re.sub(r"^((?:model|cluster): )(\S+\.ya?ml)$", absolute, text, flags=re.M)
    os.makedirs(dest_dir, exist_ok=True)
    with open(os.path.join(dest_dir, os.path.basename(path)), "w") as f:
        f.write(text)

def summarise(label, per_group):
    n = len(per_group)
    regret = sum(g["pick_regret_pct"] for g in per_group) / n
    heuristic = sum(g["heuristic_regret_pct"] for g in per_group) / n
    pairs = sum(g["pairs"] for g in per_group)
    ordered = sum(g["pairs_ordered"] for g in per_group)
    big = [g["spearman"] for g in per_group if len(g["cases"]) >= 3]
    rho = sum(big) / len(big)
    print(f"| {label} | {n} | {regret:.2f} % | {heuristic:.2f} % | {ordered} / {pairs} | {rho:+.2f} ({len(big)} groups) |")

print("| profile | groups | mean regret, model | mean regret, heuristic | pairs ordered | mean Spearman (groups of >= 3) |")
print("|---|---|---|---|---|---|")
summarise(f"{os.path.basename(base) if base else 'the cases own profile'}, no fit", groups)

methods = [
    ("held out by group: inter-node collectives fitted (1 parameter)",
     ["--fix", "matmul", "attention", "memory_bandwidth", "--free", "collectives_inter_node"]),
    ("held out by group: inter-node collectives + training scales (3 parameters)",
     ["--fix", "matmul", "attention", "memory_bandwidth", "--free", "collectives_inter_node", "training_scale"]),
    ("held out by group: curves, memory bandwidth, inter-node collectives (6 parameters)",
     ["--free", "collectives_inter_node"]),
]
for label, fit_args in methods:
    per_group = []
    for gi, g in enumerate(groups):
        d = os.path.join(work, f"m{len(per_group)}_{gi}")
        held, train = os.path.join(d, "held"), os.path.join(d, "train")
        members = set(g["cases"])
        for name, path in path_of.items():
            copy_case(path, held if name in members else train)
        prof = os.path.join(d, "profile.yaml")
        run(["fit", held, train, "--holdout", "held", "-o", prof, "--format", "json"] + on_base + fit_args)
        v = json.loads(run(["validate", held, "--cluster", prof, "--format", "json"]))
        got = v["ranking"]["groups"]
        if len(got) != 1 or set(got[0]["cases"]) != members:
            sys.exit(f"group {g['key']}: the held-out folder regrouped as {[x['cases'] for x in got]}")
        per_group.append(got[0])
    summarise(label, per_group)
PY
