#!/usr/bin/env bash
# The main job: set up, build, plan the shipped default experiment, then validate a small
# plan for real on this machine's CPUs: calibrate the machine, run the plan's ring attention
# layer, then whole training steps of the plan with a parity check against one process, each
# under mpirun with measured beside predicted.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/mpi_env.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$(nproc)"
ringplan=build/cpu/cli/ringplan
out=build/demo
mkdir -p "$out"

echo; echo "=== 1. plan the default experiment (configs/experiments/default.yaml) ==="
"$ringplan" plan configs/experiments/default.yaml --top 10 -o "$out/default_plan.yaml"

echo; echo "=== 2. plan a small experiment for this machine's CPUs ==="
"$ringplan" plan configs/experiments/cpu_small.yaml --top 5 -o "$out/cpu_plan.yaml"
cp=$(python3 -c "import sys,re; t=open(sys.argv[1]).read(); print(re.search(r'\bcp:\s*(\d+)', t).group(1))" "$out/cpu_plan.yaml")

echo; echo "=== 3. calibrate this machine (kernel rates, point-to-point links) with $cp ranks ==="
mpirun -np "$cp" "$ringplan" calibrate -o "$out/local_profile.yaml"


