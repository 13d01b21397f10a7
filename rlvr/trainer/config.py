"""GRPOConfig: every knob of the GRPO stage, typed, one docstring each (loads from YAML via
`rlvr.config.from_dict`, takes `--set grpo.x=y`). Names follow TRL's GRPOConfig where one exists.

Batch shape: B = prompts_per_step prompts per step over all processes, G = num_generations
samples each, N = B*G sequences; each process draws B / num_processes prompts, so a group never
spans processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rlvr.rewards import RewardConfig
from rlvr.rollout.engine_config import EngineConfig, as_engine_config
from rlvr.rollout.sampling import SAMPLING_SHORTHAND, SamplingConfig

SDPA_BACKENDS = {"math": "MATH", "efficient": "EFFICIENT_ATTENTION", "flash": "FLASH_ATTENTION",
                 "cudnn": "CUDNN_ATTENTION"}
"""torch's scaled-dot-product-attention kernels by the names `GRPOConfig.attention_backends` takes
(values: the `torch.nn.attention.SDPBackend` members; this module stays free of torch)."""


@dataclass
class GRPOConfig:
    renamed: ClassVar[dict[str, str]] = {
        "bf16": "replaced by the recipe's model.precision (auto, bf16-mixed, bf16-kahan, bf16, fp32)",
        "epsilon_low": "renamed to epsilon (TRL's name: the ratio is clipped below at 1 - epsilon)",
        "clip_high": "renamed to epsilon_high (TRL's name: clipped above at 1 + epsilon_high)"}
    """Old keys and what replaced them (`from_dict` says so)."""
    shorthand: ClassVar[dict[str, str]] = SAMPLING_SHORTHAND
    """`max_new_tokens: 64` is `sampling: {max_new_tokens: 64}` (as every sampling stage)."""

    # --- schedule
    steps: int = 100
    """Training steps; each step samples one batch of rollouts and makes num_iterations updates."""
    prompts_per_step: int = 8
    """B: prompts per step over all processes (must divide by the number of processes)."""
    num_generations: int = 8
    """G: completions sampled per prompt (the group). At least 2: the baseline is the group."""
    seed: int = 0
    """Seed of python/numpy/torch RNGs; process p uses seed + p so processes sample differently."""

    # --- sampling
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """max_new_tokens, temperature, top_p, top_k, stop (`rlvr.rollout.sampling`; the recipe's
    `sampling:` fills what the stage leaves out). Log-probs in the loss use the same temperature."""
    max_prompt_length: int | None = None
    """Prompt length cap (tokens): a longer prompt keeps its last max_prompt_length tokens (left
    truncation, as TRL: the question and the assistant turn are at the end); None = the model's
    context minus max_new_tokens."""
    template: str = "r1"
    """Prompt template for `rlvr.tasks.render_prompt`: plain, r1, chat, r1_chat."""
    instruction: str | None = None
    """Instruction line of the r1 templates; None = the template's default (R1_INSTRUCTION)."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Rollout engine and its options (`rlvr.rollout.engine_config`; `engine: fast` is shorthand for
    the name; the recipe's `engine:` fills what the stage leaves out)."""

    # --- optimisation
    learning_rate: float = 1e-6
    """AdamW peak learning rate."""
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    """Learning-rate schedule over steps * num_iterations updates (transformers.get_scheduler)."""
    warmup_steps: int = 0
    """Linear warm-up, in optimizer updates (ignored by `constant`)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW (beta1, beta2)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this; 0 = no clipping (the norm is still logged)."""
    micro_batch_size: int = 0
    """Sequences per forward/backward pass (gradient accumulation); 0 = the whole local batch."""
    micro_batch_tokens: int = 0
    """Tokens per forward/backward pass instead (verl's dynamic batch size): the rows longest first,
    grouped while rows x (longest prompt + longest completion) -- with packing, their real tokens --
    stay within this; a longer row runs alone. 0 = by micro_batch_size. Memory follows the lengths
    sampled rather than the cap; the same update either way."""
    split_on_oom: bool = True
    """On one process, an out-of-memory error in the batch's passes (the old and reference log-probs,
    the update's forward/backward) drops that attempt (and its gradients) and runs the pass again in
    micro-batches of half the largest one's tokens (down to one row each), with a warning; the
    batch's later passes keep the split, and `update/oom_splits` counts the halvings. A rare runaway
    completion then costs one slower update instead of the run. Under several processes, DeepSpeed
    or FSDP the error stands (the others would wait in a collective; DeepSpeed steps inside the last
    backward)."""
    num_iterations: int = 1
    """mu: optimizer updates per batch of rollouts; > 1 computes old log-probs and clips the ratio."""
    packing: bool = False
    """Run the update's forwards padding-free: each sequence's real tokens packed end to end into
    rows, positions restarting per sequence, attention kept within each sequence (block-causal
    mask, or flash-attention varlen). Same log-probs and gradients; no pad-token compute."""
    packing_row_tokens: int = 0
    """With packing: tokens per packed row at most (a longer sequence gets its own row); 0 = the
    longest sequence of the micro-batch, so rows are never wider than the padded ones (sdpa and
    eager attend over whole rows: wider rows cost attention where flash varlen would not)."""

    # --- algorithm
    advantage: str = "grpo"
    """Advantage estimator (`rlvr.algorithms` registry): grpo, dr_grpo, rloo, grpo_batch_std."""
    loss_type: str = "dapo"
    """Policy loss (`rlvr.algorithms` registry): grpo, bnpo, dapo, dr_grpo, gspo."""
    epsilon: float = 0.2
    """The ratio is clipped below at 1 - epsilon (and above at 1 + epsilon unless epsilon_high)."""
    epsilon_high: float | None = None
    """epsilon_high: clipped above at 1 + epsilon_high (DAPO clip-higher: 0.28); None = epsilon."""
    beta: float = 0.0
    """KL weight to the reference policy; 0 = no KL and no reference model is loaded."""
    kl_type: str = "k3"
    """KL estimator: k1, k2, k3."""
    mask_truncated_completions: bool = False
    """Leave completions that hit max_new_tokens out of the loss (DAPO overlong filtering)."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal and sample more prompts."""
    max_sampling_rounds: int = 3
    """Rounds of sampling per step with dynamic_sampling (the first included); if the batch is
    still short after them, it is filled with zero-variance groups (they get zero advantage)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward weights, format reward, overlong penalty, verifier timeout."""

    # --- compute
    kernels: Literal["auto", "triton", "torch"] = "auto"
    """Backend of the fused log-prob/loss kernels: triton on CUDA, torch reference elsewhere. Unless
    torch, a CUDA policy's RMSNorm and SiLU MLP also run fused Triton kernels in training
    (`rlvr.kernels.triton_layers.patch_for_training`)."""
    attention_backends: list[str] = field(default_factory=list)
    """SDPA kernels the update's forwards may use, in order of preference (math, efficient, flash,
    cudnn); empty = torch's choice. [math] sidesteps the memory-efficient kernel's backward, which
    can return NaN gradients under an attention mask (pytorch/pytorch#178251): exact, slower,
    O(L^2) memory per layer."""
    max_consecutive_nonfinite: int = 3
    """Non-finite loss or grad norm skips the update; this many in a row saves and stops the run."""

    # --- output
    save_every: int = 50
    """Checkpoint every this many steps (0 = only at the end)."""
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted); 0 = keep all."""
    log_every: int = 1
    """Write metrics every this many steps."""
    sample_every: int = 10
    """Log a few sample completions with their rewards every this many steps (0 = never)."""
    num_samples: int = 2
    """Completions written per sample log."""
    report_to: str = "auto"
    """Trackers: auto (tensorboard when installed), none, or a comma list (tensorboard,wandb)."""

    def __post_init__(self) -> None:
        positive = ("steps", "prompts_per_step", "num_iterations",
                    "max_sampling_rounds", "log_every", "max_consecutive_nonfinite")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        nonneg = ("micro_batch_size", "micro_batch_tokens", "save_every", "keep_last", "sample_every", "warmup_steps",
                  "num_samples", "weight_decay", "max_grad_norm", "beta", "packing_row_tokens")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.micro_batch_size and self.micro_batch_tokens:
            raise ValueError(f"set micro_batch_size ({self.micro_batch_size}) or micro_batch_tokens "
                             f"({self.micro_batch_tokens}), not both")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (the group is the baseline), got {self.num_generations}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        check_max_prompt_length(self.max_prompt_length)
        if not 0 <= self.epsilon < 1:
            raise ValueError(f"epsilon must be in [0, 1), got {self.epsilon}")
        if self.epsilon_high is not None and self.epsilon_high < 0:
            raise ValueError(f"epsilon_high must be >= 0, got {self.epsilon_high}")
        unknown = [n for n in self.attention_backends if n not in SDPA_BACKENDS]
        if unknown:
            raise ValueError(f"attention_backends: unknown {unknown}; valid: {', '.join(SDPA_BACKENDS)}")
        self._check_names()
        self.engine = as_engine_config(self.engine)  # a bare name from Python callers, as in YAML

    def _check_names(self) -> None:
        """Registry names fail when the config is built (a recipe: when it is parsed, before any
        stage runs), each naming its field and listing the valid names."""
        from rlvr.algorithms import ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES
        from rlvr.config import check_field
        from rlvr.trainer.metrics import resolve_trackers

        checks = {"advantage": lambda: ADVANTAGES.get(self.advantage),
                  "loss_type": lambda: POLICY_LOSSES.get(self.loss_type),
                  "kl_type": lambda: KL_ESTIMATORS.get(self.kl_type),
                  "report_to": lambda: resolve_trackers(self.report_to)}
        for name, check in checks.items():
            check_field(name, check)

    def policy_loss(self):
        """The loss settings as every loss function takes them (`PolicyLossConfig`, built once per
        run): clip range, KL weight and estimator, and dr_grpo's L_max = max_new_tokens."""
        from rlvr.algorithms import PolicyLossConfig

        high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        return PolicyLossConfig(epsilon_low=self.epsilon, epsilon_high=high, beta=self.beta,
                                kl_type=self.kl_type, max_completion_length=self.sampling.max_new_tokens)

    @property
    def total_updates(self) -> int:
        """Optimizer updates over the run (the scheduler's horizon)."""
        return self.steps * self.num_iterations


def check_max_prompt_length(value: int | None) -> None:
    """The prompt cap of the grpo, eval and rejection_sampling stages: None (the context minus
    max_new_tokens) or >= 1."""
    if value is not None and value < 1:
        raise ValueError(f"max_prompt_length must be >= 1 (or None: the context minus max_new_tokens), got {value}")
