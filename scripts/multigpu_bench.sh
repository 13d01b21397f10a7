#!/usr/bin/env bash
# Runs on the device machine nvidia-h200-x2 (the `device` tool), from the repository root, with
# .whl/ carried (scripts/fetch_device_wheels.sh fills it here):
#   scripts/multigpu_bench.sh            # at most TOTAL_S (default 450 s) of command time
#   GPUS=1,2,4 TOTAL_S=480 scripts/multigpu_bench.sh   # on nvidia-h200-x4: fast ~220 s, hf gets the rest
#   GPUS=1,2,4 ROLLOUT=hf TOTAL_S=420 scripts/multigpu_bench.sh   # a second call for every hf row
# 1) GRPO throughput, DDP and ZeRO-2 on each of GPUS, once per rollout engine of ROLLOUT (in that
#    order: a spent BENCH_BUDGET_S skips the later ones' configurations, recorded as rows),
#    STEPS timed steps after 2 warm-up steps, each configuration under its own timeout
#    (benchmarks/bench_multigpu.py);
# 2) ENGINE_TESTS=1: every shipped accelerate config (FSDP2, ZeRO-3, ZeRO-2, DDP) on 2 GPUs runs the
#    tiny recipe and resumes (tests/distributed/test_engines_gpu.py), in the time left.
# Env: GPUS (1,2), ROLLOUT (fast,hf), STEPS (8), ENGINE_TESTS (0), TOTAL_S (450),
#      BENCH_BUDGET_S (seconds for step 1, ending by TOTAL_S - 20 at the latest; default
#      TOTAL_S - 30, or TOTAL_S - 230 with ENGINE_TESTS=1).
# Writes to $OUT (the device tool returns at most 8 files): env.txt, bench_multigpu_<rollout>.json
# and .md per rollout, bench_logs.txt, engines.log (ENGINE_TESTS=1).
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out} OMP_NUM_THREADS=4
GPUS=${GPUS:-1,2} ROLLOUT=${ROLLOUT:-fast,hf} STEPS=${STEPS:-8} ENGINE_TESTS=${ENGINE_TESTS:-0}
TOTAL_S=${TOTAL_S:-450}
BENCH_BUDGET_S=${BENCH_BUDGET_S:-$((TOTAL_S - (ENGINE_TESTS == 1 ? 230 : 30)))}
# NVLink multicast stays off on these shared hosts
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$OUT"
export PYTHONPATH=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site || { echo "wheel install failed"; exit 1; }
fi
export PATH=/tmp/site/bin:$PATH
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch, transformers, accelerate, deepspeed, trl; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count()); print("transformers", transformers.__version__, "accelerate", accelerate.__version__, "deepspeed", deepspeed.__version__, "trl", trl.__version__)'
  echo "commit ${RLVR_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"
} 2>&1 | tee "$OUT/env.txt"

bench_end=$((SECONDS + BENCH_BUDGET_S)); [ "$bench_end" -le $((TOTAL_S - 20)) ] || bench_end=$((TOTAL_S - 20))
for rollout in ${ROLLOUT//,/ }; do
  budget=$((bench_end - SECONDS)); [ "$budget" -gt 0 ] || budget=0   # 0: drive records skipped rows
  echo "=== throughput, rollout $rollout $(date -u +%H:%M:%S), ${budget}s of bench budget left"
  timeout $((budget + 15)) python3 benchmarks/bench_multigpu.py drive --out "$OUT" --gpus "$GPUS" \
    --engines ddp,zero2 --rollout "$rollout" --budget "$budget" --timeout 100 --steps "$STEPS" --warmup 2
done
for f in "$OUT"/bench_multigpu_*.log; do
  [ -e "$f" ] || continue
  echo "=== $(basename "$f")"; grep -v "it/s\]" "$f" | tail -25
done > "$OUT/bench_logs.txt" 2>&1
rm -f "$OUT"/bench_multigpu_*.log   # the device tool returns at most 8 files

left=$((TOTAL_S - SECONDS))   # the whole script stays under TOTAL_S
if [ "$ENGINE_TESTS" = 1 ]; then
  echo "=== engines $(date -u +%H:%M:%S), ${left}s left"
  [ "$left" -gt 60 ] && timeout "$left" python3 -m pytest -m gpu -v -s -p no:cacheprovider \
    tests/distributed/test_engines_gpu.py > "$OUT/engines.log" 2>&1
  grep -E "PASSED|FAILED|ERROR|SKIPPED|resumed - uninterrupted|passed|failed" "$OUT/engines.log" | tail -20
fi
echo "=== done $(date -u +%H:%M:%S)"
