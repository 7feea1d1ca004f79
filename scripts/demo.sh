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

echo; echo "=== 4. run the plan's ring attention layer on $cp ranks: measured vs predicted ==="
mpirun -np "$cp" "$ringplan" run "$out/cpu_plan.yaml" --scope attention --profile "$out/local_profile.yaml" \
  --iters 5 --warmup 1 --trace "$out/run_trace.json"
echo; echo "trace: $out/run_trace.json (open it in the Perfetto UI or chrome://tracing: each 'measured rank N' with its 'predicted rank N' under it)"

echo; echo "=== 5. run whole training steps of the plan on $cp ranks: parity with one process, measured vs predicted ==="
mpirun -np "$cp" "$ringplan" run "$out/cpu_plan.yaml" --scope step --check-parity --steps 3 --warmup 1 \
  --profile "$out/local_profile.yaml" --trace "$out/step_trace.json"
echo; echo "step trace: $out/step_trace.json (measured steps, and the cost model's terms of each step under them)"
