#!/usr/bin/env bash
# Runs on the device machine nvidia-h200-x2 (the `device` tool), from the repository root, with
# .whl/ carried (scripts/fetch_device_wheels.sh fills it here):
#   scripts/multigpu_bench.sh            # at most TOTAL_S (default 450 s) of command time
#   GPUS=1,2,4 BENCH_BUDGET_S=330 TOTAL_S=500 scripts/multigpu_bench.sh   # on nvidia-h200-x4
# 1) GRPO throughput, DDP and ZeRO-2 on 1 and 2 GPUs (benchmarks/bench_multigpu.py), each
#    configuration under its own timeout, failures recorded as rows;
# 2) every shipped accelerate config (FSDP2, ZeRO-3, ZeRO-2, DDP) on 2 GPUs runs the tiny recipe
#    and resumes (tests/distributed/test_engines_gpu.py).
# Writes to $OUT: env.txt, bench_multigpu.json, bench_multigpu.md, bench_logs.txt, engines.log.
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out} OMP_NUM_THREADS=4
GPUS=${GPUS:-1,2} BENCH_BUDGET_S=${BENCH_BUDGET_S:-245} TOTAL_S=${TOTAL_S:-450}
# NVLink multicast stays off on these shared hosts (device KINDS.md)
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
  git rev-parse --short HEAD 2>/dev/null || true
} 2>&1 | tee "$OUT/env.txt"

echo "=== throughput $(date -u +%H:%M:%S)"
timeout $((BENCH_BUDGET_S + 15)) python3 benchmarks/bench_multigpu.py drive --out "$OUT" --gpus "$GPUS" --engines ddp,zero2 \
  --budget "$BENCH_BUDGET_S" --timeout 90 --steps 3 --warmup 2 --new-tokens 128
for f in "$OUT"/bench_multigpu_*.log; do
  [ -e "$f" ] || continue
  echo "=== $(basename "$f")"; grep -v "it/s\]" "$f" | tail -25
done > "$OUT/bench_logs.txt" 2>&1
rm -f "$OUT"/bench_multigpu_*.log   # the device tool returns at most 8 files

left=$((TOTAL_S - SECONDS))   # the whole script stays under TOTAL_S
echo "=== engines $(date -u +%H:%M:%S), ${left}s left"
[ "$left" -gt 60 ] && timeout "$left" python3 -m pytest -m gpu -v -s -p no:cacheprovider tests/distributed/test_engines_gpu.py \
  > "$OUT/engines.log" 2>&1
grep -E "PASSED|FAILED|ERROR|SKIPPED|resumed - uninterrupted|passed|failed" "$OUT/engines.log" | tail -20
echo "=== done $(date -u +%H:%M:%S)"
