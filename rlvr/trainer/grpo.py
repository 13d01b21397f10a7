"""GRPO on accelerate: rollout -> verify -> rewards -> advantages -> loss -> step -> log.

`run_grpo` reads top to bottom; the plumbing (set-up, sampling rounds, the update, checkpoints,
metrics) lives in the helpers below it and in `checkpoint.py` / `metrics.py` / `batch.py`.

Multi-process (accelerate launch): every process holds the same task stream, draws the global
batch of B prompts and keeps its own B / num_processes of them, so groups never span processes,
the data order does not depend on the number of processes, and a resumed run draws what the
uninterrupted one would. Every process runs the same collectives in the same order; dynamic
sampling decides its number of rounds with an all-reduce.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from rlvr.algorithms import LossNormalizer, PolicyLossConfig, compute_advantages
from rlvr.config import to_dict
from rlvr.models.loading import is_peft
from rlvr.models.copies import frozen_copy
from rlvr.models.generation_weights import GenerationWeights
from rlvr.models.precision import accelerate_mixed_precision, compute_dtype, warn_pure_bf16
from rlvr.rewards import RewardOutput, compute_rewards
from rlvr.rollout import SamplingParams, make_engine
from rlvr.rollout.base import eval_mode
from rlvr.trainer.batch import Samples, TrainBatch, build_train_batch, completion_hidden, output_weight, sdpa_backends
from rlvr.trainer import micro_batches as micro
from rlvr.trainer.checkpoint import Checkpointer, TrainerState
from rlvr.trainer import distributed
from rlvr.trainer.config import GRPOConfig
from rlvr.trainer.packing import packed_completion_hidden
from rlvr.trainer.metrics import MetricsLogger, reduce_max, reduce_sum, resolve_trackers, sample_metrics
from rlvr.trainer.optimizer import make_optimizer
from rlvr.trainer.prompts import PromptEncoder, context_limit
from rlvr.trainer.signals import Interrupted, catch_stop_signals

RewardFn = Callable[..., RewardOutput]
"""(examples (N), texts (N), lengths (N), truncated (N), RewardConfig) -> RewardOutput."""


class NonFiniteError(RuntimeError):
    """Too many consecutive non-finite losses or gradient norms."""


def run_grpo(policy, task, cfg: GRPOConfig, output_dir, resume=None, accelerator=None, *,
             reward_fn: RewardFn = compute_rewards) -> dict:
    """Train `policy` (rlvr.models.Policy) with GRPO on problems from `task` (a TaskSource).

    Writes `output_dir/metrics.jsonl`, `samples.jsonl`, `checkpoints/step-XXXXXXXX/` and the final
    model to `output_dir/model`. `resume`: None, "auto" (newest complete checkpoint, if any) or a
    checkpoint path. Returns the metrics of the last step (plus `step`). On SIGTERM/SIGINT the
    current step finishes, a checkpoint is written and `Interrupted` is raised.
    """
    from rlvr.models import save_policy

    output_dir = Path(output_dir)
    t = _setup(policy, task, cfg, output_dir, accelerator)
    acc, model, optimizer, scheduler = t.acc, t.model, t.optimizer, t.scheduler
    state = TrainerState(world_size=acc.num_processes)
    ckpt = Checkpointer(output_dir / "checkpoints", acc, cfg.keep_last)
    ckpt.clean_staging()
    state = ckpt.resume(resume, model=model, optimizer=optimizer, scheduler=scheduler, task=task) or state
    logger = MetricsLogger(output_dir, acc, cfg.steps, state.step, cfg.log_every)
    save = lambda: ckpt.save(state.step, model=model, policy=policy, save_policy=save_policy,  # noqa: E731
                             optimizer=optimizer, scheduler=scheduler, task=task, state=state)

    with catch_stop_signals() as caught:  # SIGTERM/SIGINT: finish the step, save, stop
        for step in range(state.step + 1, cfg.steps + 1):
            t_start = time.perf_counter()
            _reset_peak_memory(acc)
            # rollout -> verify -> rewards (with dynamic sampling: more rounds until the batch is full)
            samples, sampled_metrics, times = collect_samples(t, task, cfg, reward_fn)
            sampled_metrics.update(t.prompts.take_metrics(acc))  # prompts/truncated
            # advantages over the whole (gathered) batch, then this process's share
            with _timed(times, "time/advantage"):
                advantages, adv_metrics = global_advantages(acc, samples, cfg)
            # loss -> step, num_iterations times on the same rollouts
            with _timed(times, "time/train"):
                batch = build_train_batch(samples, t.pad_id, acc.device, cfg.mask_truncated_completions)
                train_metrics = train_on_batch(t, batch, advantages.to(acc.device), cfg, state)
            times["time/step"] = time.perf_counter() - t_start
            times = _reduce_times(acc, times, _peak_memory_gib(acc))

            state.step = step
            state.metrics = {**sampled_metrics, **adv_metrics, **train_metrics, **times,
                             "lr": scheduler.get_last_lr()[0],
                             "tokens_per_s": sampled_metrics["completions/tokens"] / times["time/step"]}
            logger.log(step, state.metrics)
            if cfg.sample_every and step % cfg.sample_every == 0:
                logger.log_samples(step, samples, cfg.num_samples, t.tokenizer)
            if state.nonfinite_streak >= cfg.max_consecutive_nonfinite:
                path = save()
                raise NonFiniteError(
                    f"step {step}: {state.nonfinite_streak} consecutive updates had a non-finite loss or "
                    f"gradient norm (max_consecutive_nonfinite={cfg.max_consecutive_nonfinite}); state saved "
                    f"to {path}. Lower learning_rate, check rewards for NaN, or set max_grad_norm.")
            stop = _agreed_signal(acc, caught)  # every process stops after the same step
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps or stop:
                path = save()
            if stop:
                if acc.is_main_process:
                    print(f"[rlvr] {signal.Signals(stop).name}: stopped after step {step}, checkpoint {path}",
                          flush=True)
                raise Interrupted(stop, step, path)

    logger.close()
    distributed.save_full_policy(acc, model, policy, save_policy, output_dir / "model")  # collective
    acc.wait_for_everyone()
    # not acc.end_training(): it also destroys the process group, and a recipe runs more stages
    # (and more run_grpo calls) in the same processes
    for tracker in acc.trackers:
        tracker.finish()
    return {"step": state.step, **state.metrics}


# ----------------------------------------------------------------------------- set-up

@dataclass
class _Training:
    """What the loop works with, built once by `_setup`."""

    acc: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    engine: object
    tokenizer: object
    ref_model: torch.nn.Module | None
    pad_id: int
    sampling: SamplingParams
    prompts: PromptEncoder
    generation: GenerationWeights
    """The weights the engine reads; refreshed from the trained ones before every generate."""
    loss: PolicyLossConfig
    """The policy-loss settings, built from the config once."""


def _setup(policy, task, cfg: GRPOConfig, output_dir: Path, accelerator) -> _Training:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    trackers = resolve_trackers(cfg.report_to) if accelerator is None else []
    cuda = torch.cuda.is_available()
    warn_pure_bf16(policy.precision, cfg.learning_rate, policy.model)
    acc = accelerator or Accelerator(
        mixed_precision=accelerate_mixed_precision(policy.precision),
        # without cpu=True a CPU-only machine launched with several processes (torchrun,
        # `accelerate launch --multi_gpu`) would run them as independent single-process jobs
        cpu=not cuda,
        log_with=trackers or None,
        project_dir=str(output_dir),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != acc.num_processes:
        raise RuntimeError(f"launched as {launched} processes but accelerate sees {acc.num_processes}: "
                           "on a CPU-only machine set ACCELERATE_USE_CPU=true (or create the "
                           "Accelerator with cpu=True) so the processes join one gloo group")
    if cfg.prompts_per_step % acc.num_processes:
        raise ValueError(f"prompts_per_step ({cfg.prompts_per_step}) must be a multiple of the "
                         f"number of processes ({acc.num_processes}): groups never span processes")
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed + acc.process_index)  # processes sample different completions
    model, tokenizer = policy.model, policy.tokenizer
    if cfg.kernels != "torch":  # fused Triton RMSNorm/SwiGLU; patches nothing off CUDA or without triton
        from rlvr.kernels.triton_layers import patch_for_training

        patch_for_training(model, acc.device)  # before the reference copy and before prepare moves it
    ref_model = _reference_model(model, cfg, policy.precision)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    optimizer = make_optimizer(params, policy.precision, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                               betas=tuple(cfg.adam_betas))
    model, optimizer = distributed.prepare(acc, model, optimizer, cfg.max_grad_norm)
    # Not passed to prepare: accelerate would step it once per process per update.
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=cfg.total_updates)
    if ref_model is not None:
        ref_model.to(acc.device)
    if trackers:  # a caller-made accelerator brings its own trackers
        acc.init_trackers("rlvr-grpo", config=_flat(to_dict(cfg)))
    unwrapped = acc.unwrap_model(model)
    # bf16-mixed: generation reads a bfloat16 copy of the float32 masters (sharded engines gather
    # their own parameters and generate under autocast instead)
    sharded = distributed.shards_parameters(acc)
    generation = GenerationWeights(unwrapped, None if sharded else compute_dtype(policy.precision),
                                   merge_lora=cfg.engine.merge_lora)
    engine_name = distributed.rollout_engine_name(acc, cfg.engine.name, generation.model)
    engine = make_engine(replace(cfg.engine, name=engine_name), generation.model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling = SamplingParams.of(cfg.sampling)
    prompts = PromptEncoder(tokenizer, cfg, context_limit(unwrapped))  # checks prompt + completion fit
    return _Training(acc, model, optimizer, scheduler, engine, tokenizer, ref_model, pad_id,
                     sampling, prompts, generation, cfg.policy_loss())


def _reference_model(model, cfg: GRPOConfig, precision: str):
    """None when beta == 0 or for LoRA (the reference is the base with the adapter disabled);
    otherwise a frozen copy of the initial policy in the compute dtype (it never trains)."""
    if cfg.beta == 0 or is_peft(model):
        return None
    return frozen_copy(model, compute_dtype(precision))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


# ----------------------------------------------------------------------------- rollout -> rewards

def collect_samples(t: _Training, task, cfg: GRPOConfig, reward_fn: RewardFn):
    """This process's B_local groups, scored; the step's sampling metrics; generate/verify/sync times."""
    times = {"time/generate": 0.0, "time/verify": 0.0, "time/sync": 0.0}
    if cfg.dynamic_sampling:
        return (*_dynamic_sampling(t, task, cfg, reward_fn, times), times)
    samples = _sample_and_score(t, _draw_prompts(task, cfg.prompts_per_step, t.acc), cfg, reward_fn, times)
    with _timed(times, "time/sync"):  # first collective after generation: waits for the slowest process
        metrics = sample_metrics(t.acc, samples, cfg.num_generations, _metric_kinds())
    return samples, metrics, times


def _dynamic_sampling(t: _Training, task, cfg: GRPOConfig, reward_fn: RewardFn, times):
    """DAPO dynamic sampling: groups whose rewards are all equal are set aside and more prompts are
    drawn until every process has B_local informative groups or `max_sampling_rounds` is reached;
    a process still short fills up with set-aside groups (zero advantage)."""
    acc, g = t.acc, cfg.num_generations
    b_local = cfg.prompts_per_step // acc.num_processes
    every_round, kept, spare = [], [], []
    for rounds in range(1, cfg.max_sampling_rounds + 1):
        samples = _sample_and_score(t, _draw_prompts(task, cfg.prompts_per_step, acc), cfg, reward_fn, times)
        every_round.append(samples)
        flat = [max(r) == min(r) for r in samples.group_rewards(g)]
        kept.append(samples.select_groups([i for i, f in enumerate(flat) if not f], g))
        spare.append(samples.select_groups([i for i, f in enumerate(flat) if f], g))
        short = max(0, b_local - sum(len(k) for k in kept) // g)
        # every process must agree on whether to sample again (same number of collectives)
        with _timed(times, "time/sync"):
            short_anywhere = reduce_sum(acc, [float(short)])[0]
        if short_anywhere == 0:
            break
    batch = Samples.concat(kept + spare).select_groups(list(range(b_local)), g)
    informative = sum(1 for r in batch.group_rewards(g) if max(r) != min(r))
    with _timed(times, "time/sync"):
        metrics = sample_metrics(acc, Samples.concat(every_round), g, _metric_kinds())
        (informative_total,) = reduce_sum(acc, [float(informative)])
    metrics["dynamic_sampling/rounds"] = float(rounds)
    metrics["dynamic_sampling/informative_frac"] = informative_total / cfg.prompts_per_step
    return batch, metrics


@contextlib.contextmanager
def _timed(times: dict[str, float], key: str):
    """Adds the block's wall seconds to `times[key]`."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[key] = times.get(key, 0.0) + time.perf_counter() - t0


def _agreed_signal(acc, caught: dict) -> int:
    """The stop signal any process received (0: none), the same on every process."""
    (signum,) = reduce_max(acc, [float(caught["signum"])])
    return int(signum)


def _reduce_times(acc, times: dict[str, float], peak_gib: float | None = None) -> dict[str, float]:
    """Each phase's time on the slowest process, in one gather. `time/other` (drawing, templating
    and tokenising prompts; the rest of the step outside the timed phases) is this process's
    remainder before the reduction. `time/generate_min`, the fastest process's generation, shows
    a straggler: the others wait for it in `time/sync`. `peak_gib` rides the same gather: the
    step's peak GPU memory on the fullest process (`memory/peak_gib`), what an out-of-memory
    error would be about."""
    phases = sum(v for k, v in times.items() if k != "time/step")
    times = {**times, "time/other": max(times["time/step"] - phases, 0.0)}
    values = reduce_max(acc, list(times.values()) + [-times["time/generate"], peak_gib or 0.0])
    reduced = {**dict(zip(times, values)), "time/generate_min": -values[-2]}
    return reduced if peak_gib is None else {**reduced, "memory/peak_gib": values[-1]}


def _reset_peak_memory(acc) -> None:
    if acc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(acc.device)


def _peak_memory_gib(acc) -> float | None:
    """Most GPU memory torch held allocated since the step began (generation, log-probs, update)."""
    return torch.cuda.max_memory_allocated(acc.device) / 2**30 if acc.device.type == "cuda" else None


def _draw_prompts(task, global_b: int, acc) -> list:
    """Every process draws the same global batch (same stream) and keeps its contiguous slice."""
    examples = task.sample(global_b)
    if len(examples) != global_b:
        raise RuntimeError(f"task.sample({global_b}) returned {len(examples)} examples")
    b_local = global_b // acc.num_processes
    return examples[acc.process_index * b_local:(acc.process_index + 1) * b_local]


def _sample_and_score(t: _Training, examples, cfg: GRPOConfig, reward_fn: RewardFn, times) -> Samples:
    g = cfg.num_generations
    prompt_ids = t.prompts.encode(examples)  # left-truncated to max_prompt_length
    autocast = t.acc.autocast() if t.generation.needs_autocast else contextlib.nullcontext()
    with _timed(times, "time/generate"), distributed.full_parameters(t.acc, t.model), autocast:
        t.generation.refresh()  # bf16-mixed: round the masters into the copy; LoRA: merge the adapters
        rollout = t.engine.generate(prompt_ids, g, t.sampling)  # ZeRO-3/FSDP2: gathered once per generate
    per_seq_examples = [ex for ex in examples for _ in range(g)]
    with _timed(times, "time/verify"):
        scored = reward_fn(per_seq_examples, rollout.texts, rollout.lengths, rollout.truncated, cfg.reward)
    if any(not math.isfinite(r) for r in scored.total):
        warnings.warn("non-finite rewards; they are counted as 0")
    return Samples(
        examples=per_seq_examples,
        prompt_ids=[p for p in prompt_ids for _ in range(g)],
        completion_ids=rollout.completion_ids, texts=rollout.texts, truncated=rollout.truncated,
        rewards=[r if math.isfinite(r) else 0.0 for r in scored.total],
        per_verifier=scored.per_verifier, correct=scored.correct, reasons=scored.reasons,
    )


def _metric_kinds() -> list[str]:
    """The verifier kinds to report, identical on every process (a fixed list, not the data's)."""
    import verifiers

    return sorted(set(verifiers.available_kinds()) | {"format", "overlong"})


def global_advantages(acc, samples: Samples, cfg: GRPOConfig):
    """Advantages (N_local,) computed on the gathered global batch (batch-level std and metrics
    see every process), then sliced back to this process's rows."""
    rewards = torch.tensor(samples.rewards, dtype=torch.float32, device=acc.device)
    everyone = acc.gather(rewards) if acc.num_processes > 1 else rewards
    adv, metrics = compute_advantages(cfg.advantage, everyone.cpu(), cfg.num_generations)
    n = len(samples)
    mine = adv[acc.process_index * n:(acc.process_index + 1) * n]
    # reward/* and frac_reward_zero_std are reported over every sampled completion instead
    return mine, {k: v for k, v in metrics.items() if k.startswith("advantage/")}


# ----------------------------------------------------------------------------- loss -> step

def train_on_batch(t: _Training, batch: TrainBatch, advantages: torch.Tensor, cfg: GRPOConfig,
                   state: TrainerState) -> dict[str, float]:
    """num_iterations optimizer updates on one batch; returns the metrics of the updates."""
    from rlvr.kernels import token_logprobs

    acc, model = t.acc, t.model
    normalizer = _normalizer(acc, batch, cfg)
    weight = output_weight(acc.unwrap_model(model))
    # one plan for every pass over this batch (it syncs with the host, and across processes under a token budget)
    groups = micro.micro_batches(batch, cfg.micro_batch_size, cfg.micro_batch_tokens, cfg.packing, acc)
    old_logp = ref_logp = None
    fit = _Fitting(t, batch, groups, cfg)
    # eval mode: the engine sampled without dropout, so the ratio's denominator is scored without it
    with torch.no_grad(), eval_mode(model):
        if cfg.num_iterations > 1:  # the ratio's denominator: the policy that sampled
            old_logp = fit.run(lambda g: _logprobs(model, batch, g, weight, cfg, acc, token_logprobs))
        if cfg.beta > 0:
            ref_logp = fit.run(lambda g: _reference_logprobs(t, batch, g, cfg, token_logprobs))
    totals: dict[str, list[float]] = {}
    for _ in range(cfg.num_iterations):
        m = fit.run(lambda g: _update(t, batch, g, advantages, old_logp, ref_logp, normalizer, weight, cfg, state))
        for k, v in m.items():
            totals.setdefault(k, []).append(v)
    return {**{k: sum(v) / len(v) for k, v in totals.items()}, "update/oom_splits": float(fit.splits)}


class _Fitting:
    """The batch's passes (log-probs, updates) over its micro-batches, each run again in smaller ones
    after an out-of-memory error in its forwards/backwards (`split_on_oom`, one process without
    DeepSpeed or FSDP); the batch's later passes start from the micro-batches that fit. An error it
    cannot split away names the settings that trade speed for memory (`_memory_hint`)."""

    def __init__(self, t: _Training, batch: TrainBatch, groups: list[micro.MicroBatch], cfg: GRPOConfig):
        self.t, self.batch, self.groups, self.cfg, self.splits = t, batch, groups, cfg, 0

    def run(self, passes):
        """`passes(groups)`, which raises `_PassesOOM` for an error it may be run again after."""
        while True:
            try:
                return passes(self.groups)
            except _PassesOOM as e:
                self._split(e.__cause__)
            except torch.OutOfMemoryError as e:  # after the passes (the optimizer step): no split helps
                raise _memory_hint(self.batch, self.groups, self.splits, e) from e

    def _split(self, error: BaseException) -> None:
        split = micro.halved(self.batch, self.groups, self.cfg.packing)
        # one plain process only: others would wait in a collective, and DeepSpeed steps inside the last backward
        if not self.cfg.split_on_oom or distributed.engine_name(self.t.acc) != "single" or split is None:
            raise _memory_hint(self.batch, self.groups, self.splits, error) from error
        self.t.optimizer.zero_grad(set_to_none=True)  # an update's partial gradients
        torch.cuda.empty_cache()
        self.splits += 1
        warnings.warn(f"out of memory in the GRPO update with {len(self.groups)} micro-batch(es); running it again "
                      f"in {len(split[0])} of at most {split[1]} tokens (split_on_oom). Setting "
                      f"micro_batch_tokens: {split[1]} or lower skips the failed attempts.")
        self.groups = split[0]


class _PassesOOM(Exception):
    """Out of memory in forward (and backward) passes that change nothing until they finish: safe to
    run again in smaller micro-batches."""


def _memory_hint(batch: TrainBatch, groups: list[micro.MicroBatch], splits: int,
                 error: BaseException) -> torch.OutOfMemoryError:
    """The error, saying what one forward held and which settings trade speed for memory. The update
    keeps every layer's activations of a micro-batch at once (the whole batch by default), where TRL's
    GRPO checkpoints activations by default; a 1.5B model's 64 x 640 tokens do not fit 80 GB."""
    rows = max(len(g.indices) for g in groups)
    width = max(g.prompt_width + g.completion_width for g in groups)
    halved = f", after {splits} halving(s) by split_on_oom" if splits else ""
    first = str(error).splitlines()[0] if str(error) else ""
    return torch.OutOfMemoryError(
        f"out of memory in the GRPO update, {rows} of {batch.targets.shape[0]} sequences x up to {width} tokens per "
        f"forward{halved}: set the GRPO stage's micro_batch_size or micro_batch_tokens lower (gradient accumulation, "
        f"the same update) or the model's gradient_checkpointing: true (activations recomputed in the backward); "
        f"`rlvr run --resume auto` continues the stage from its last checkpoint with them. {first}")


def _update(t: _Training, batch: TrainBatch, groups: list[micro.MicroBatch], advantages, old_logp, ref_logp,
            normalizer, weight, cfg: GRPOConfig, state: TrainerState) -> dict[str, float]:
    """One optimizer update: accumulate gradients over the micro-batches `groups`, clip, step (or skip)."""
    acc, model, optimizer = t.acc, t.model, t.optimizer
    model.train()
    try:
        loss_sum, metrics = _accumulate(t, batch, groups, advantages, old_logp, ref_logp, normalizer, weight, cfg)
    except torch.OutOfMemoryError as e:
        raise _PassesOOM() from e
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    norms = _grad_norms(model)
    grad_norm = float(acc.clip_grad_norm_(model.parameters(), max_norm))
    # the loss summed over processes: every process must take the same skip decision
    (global_loss,) = reduce_sum(acc, [loss_sum])
    finite = math.isfinite(global_loss) and math.isfinite(grad_norm)
    if finite:
        optimizer.step()
        state.nonfinite_streak = 0
    else:
        state.nonfinite_streak += 1
        warnings.warn(f"non-finite loss ({global_loss}) or grad norm ({grad_norm}): update skipped "
                      f"({state.nonfinite_streak} in a row); non-finite gradients in {_nonfinite_grads(norms)}")
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # a skipped update still advances the schedule (step count = time)
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        t.scheduler.step()
    return {**metrics.reduce(acc), "grad_norm": grad_norm, "skipped_updates": 0.0 if finite else 1.0,
            "update/micro_batches": float(len(groups))}


def _accumulate(t: _Training, batch: TrainBatch, groups: list[micro.MicroBatch], advantages, old_logp, ref_logp,
                normalizer, weight, cfg: GRPOConfig) -> tuple[float, "_LossMetrics"]:
    """Forward, fused loss and backward of each micro-batch, gradients summed; the loss and metrics."""
    from rlvr.kernels import fused_policy_loss

    acc, model = t.acc, t.model
    loss_sum, metrics = 0.0, _LossMetrics()
    for j, mb in enumerate(groups):
        part = micro.part(batch, mb)
        # gradient all-reduce only on the last micro-batch (identical count on every process)
        sync = distributed.accumulation(acc, model, last=j == len(groups) - 1)
        with sync, acc.autocast(), contextlib.ExitStack() as after_forward:
            hidden = _hidden(model, part, cfg)
            w = after_forward.enter_context(distributed.loss_weight(acc, model, weight))  # ZeRO-3/FSDP2: whole
            loss, m = fused_policy_loss(
                _temper(hidden, cfg), w, part.targets, part.mask, advantages[mb.rows],
                micro.columns(old_logp, mb), micro.columns(ref_logp, mb),
                loss_type=cfg.loss_type, config=t.loss, normalizer=normalizer, backend=cfg.kernels)
            acc.backward(loss)
        loss_sum += loss.item()  # host sync, once per micro-batch: the non-finite check needs it
        metrics.add(m, tokens=float(part.mask.sum().item()))
    return loss_sum, metrics


class _LossMetrics:
    """Combines the loss metrics of micro-batches and processes into metrics of the whole batch:
    `loss/*` are shares of the global loss (summed), `*/min` and `*/max` are extremes, the rest
    are token means (weighted by each micro-batch's valid tokens)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.mins: dict[str, float] = {}
        self.maxs: dict[str, float] = {}
        self.tokens = 0.0

    def add(self, m: dict[str, float], tokens: float) -> None:
        self.tokens += tokens
        for k, v in m.items():
            if k.endswith("/min"):
                self.mins[k] = min(self.mins.get(k, math.inf), v)
            elif k.endswith("/max"):
                self.maxs[k] = max(self.maxs.get(k, -math.inf), v)
            else:
                weight = 1.0 if k.startswith("loss/") else tokens
                self.sums[k] = self.sums.get(k, 0.0) + weight * v

    def reduce(self, acc) -> dict[str, float]:
        # the same keys on every process (same loss and options everywhere): same collectives
        sum_keys, min_keys, max_keys = sorted(self.sums), sorted(self.mins), sorted(self.maxs)
        sums = reduce_sum(acc, [self.sums[k] for k in sum_keys] + [self.tokens])
        extremes = reduce_max(acc, [-self.mins[k] for k in min_keys] + [self.maxs[k] for k in max_keys])
        tokens = max(sums[-1], 1.0)
        out = {}
        for k, v in zip(sum_keys, sums):
            # each loss share carries a x num_processes factor (it undoes DDP's gradient mean)
            out[k] = v / acc.num_processes if k.startswith("loss/") else v / tokens
        out.update({k: -v for k, v in zip(min_keys, extremes)})
        out.update(dict(zip(max_keys, extremes[len(min_keys):])))
        return out


def _grad_norms(model):
    """(names, per-parameter gradient norms on the device, no host sync), taken before clipping:
    a non-finite total norm makes clipping scale every gradient to NaN, and with it the trace of
    where the NaN began. None where gradients are not plain tensors (ZeRO, FSDP shards)."""
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named or any(type(g) is not torch.Tensor for _, g in named):
        return None
    return [n for n, _ in named], torch.stack(torch._foreach_norm([g for _, g in named], 2, dtype=torch.float32))


def _nonfinite_grads(norms, most: int = 4) -> str:
    """Which parameters had non-finite gradients: which layer a NaN comes from says more than the
    total norm does. Parameters are listed in forward order, so a NaN born inside the backward
    pass reaches every parameter before its origin: the bad ones nearest the output, and the
    finite ones after them, bracket where it began. Read only on a skipped update."""
    if norms is None:
        return "parameters not seen here (sharded gradients)"
    names, values = norms
    ok = torch.isfinite(values).tolist()
    bad = [name for name, fine in zip(names, ok) if not fine]
    if not bad:
        return "no parameter (the loss itself)"
    text = f"{len(bad)} of {len(names)} parameters, nearest the output: " + ", ".join(reversed(bad[-most:]))
    finite = [name for name, fine in zip(names, ok) if fine]
    if finite:
        text += f"; finite ({len(finite)}), nearest the output: " + ", ".join(reversed(finite[-2 * most:]))
    return text


def _normalizer(acc, batch: TrainBatch, cfg: GRPOConfig) -> LossNormalizer:
    local_tokens = float(batch.mask.sum().item())  # host sync, once per step
    seqs, tokens = reduce_sum(acc, [float(batch.targets.shape[0]), local_tokens])
    return LossNormalizer(num_sequences=seqs, num_tokens=max(tokens, 1.0),
                          num_local_tokens=max(local_tokens, 1.0), num_processes=acc.num_processes)


def _hidden(model, batch: TrainBatch, cfg: GRPOConfig) -> torch.Tensor:
    """(N, T, H) hidden states predicting the completion tokens: padded rows, or packed ones."""
    with sdpa_backends(cfg.attention_backends):
        if cfg.packing:
            return packed_completion_hidden(model, batch, cfg.packing_row_tokens)
        return completion_hidden(model, batch)


def _temper(hidden: torch.Tensor, cfg: GRPOConfig) -> torch.Tensor:
    """logits / tau = (hidden / tau) W^T: the loss scores the distribution that was sampled."""
    tau = cfg.sampling.temperature
    return hidden / tau if tau > 0 else hidden


def _logprobs(model, batch: TrainBatch, groups: list[micro.MicroBatch], weight, cfg: GRPOConfig, acc,
              token_logprobs) -> torch.Tensor:
    """(N, T) log-probs of the completion tokens under `model`, no grad, in the micro-batches
    `groups` (zeros past each micro-batch's longest completion)."""
    out = torch.zeros(batch.targets.shape, dtype=torch.float32, device=batch.targets.device)
    try:
        for mb in groups:
            part = micro.part(batch, mb)
            with acc.autocast(), contextlib.ExitStack() as after_forward:
                hidden = _hidden(model, part, cfg)
                w = after_forward.enter_context(distributed.loss_weight(acc, model, weight))  # ZeRO-3/FSDP2: whole
                logp, _ = token_logprobs(_temper(hidden, cfg), w, part.targets, mask=part.mask,
                                         backend=cfg.kernels)
            out[mb.rows, :mb.completion_width] = logp.float()
    except torch.OutOfMemoryError as e:
        raise _PassesOOM() from e
    return out


def _reference_logprobs(t: _Training, batch: TrainBatch, groups: list[micro.MicroBatch], cfg: GRPOConfig,
                        token_logprobs) -> torch.Tensor:
    if t.ref_model is not None:
        return _logprobs(t.ref_model, batch, groups, output_weight(t.ref_model), cfg, t.acc, token_logprobs)
    unwrapped = t.acc.unwrap_model(t.model)  # LoRA: the base model is the reference
    with unwrapped.disable_adapter():
        return _logprobs(unwrapped, batch, groups, output_weight(unwrapped), cfg, t.acc, token_logprobs)


__all__ = ["GRPOConfig", "Interrupted", "NonFiniteError", "run_grpo"]
