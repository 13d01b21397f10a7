"""Engine settings: which rollout engine samples, and the fast engine's options.

`EngineConfig` is what a recipe holds: its top-level `engine:` fills the keys a stage leaves out
and a stage's own keys win (as `sampling:`, via `rlvr.config.from_dict`'s `defaults`). A plain
string is shorthand for the name (`engine: fast` is `engine: {name: fast}`). The fast engine's
options sit beside the name (`engine: {name: fast, kernels: torch}`); the hf engine has none and
ignores them. Torch-free, so a recipe is checked without loading torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar


@dataclass
class FastEngineConfig:
    """Options of the fast engine (`rlvr.rollout.fast.FastEngine`); their only defaults."""

    cuda_graph: bool = True
    """Capture the decode step in a CUDA graph (CUDA only; on the CPU the step runs eagerly)."""
    compile: bool = False
    """torch.compile the model part of the decode step before capture: fuses norms, RoPE and
    elementwise work into fewer kernels; costs one compile per (N, S) shape."""
    length_bucket: int = 64
    """The cache length S is rounded up to a multiple of this, so graphs are reused across
    batches whose prompt widths differ (tokens)."""
    check_every: int = 16
    """Decode steps between host checks for "every sequence finished" (each is a sync); refill runs
    use `refill_check_every`."""
    max_graphs: int = 4
    """Captured graphs kept (each holds its KV cache); the oldest is dropped beyond this."""
    kernels: str = "auto"
    """Decode-step implementation: `triton` (fused kernels of rlvr.rollout.fast_kernels: one
    kernel each for add+RMSNorm, RoPE+cache write, attention, SiLU*up, sampling), `torch`
    (torch ops only), or `auto` (triton on CUDA when triton imports and the model fits: SiLU MLP,
    RMSNorm, power-of-two head dim, no q/k norm)."""
    fuse_gemms: bool = False
    """With triton kernels: also fuse residual add + RMSNorm + the q/k/v projections + RoPE +
    cache write into one Triton GEMM kernel, and add + RMSNorm + gate/up + SiLU*up into another (5
    launches per layer instead of 12). Off by default: these GEMMs are slower than cuBLAS's by
    more than the saved launches gain (BENCHMARKS.md). Used when the projections are plain
    nn.Linear (not LoRA), the MLP has no bias and the head dim is >= 32; otherwise the per-op
    triton kernels run."""

    stack_projections: bool = True
    """With triton kernels: run q/k/v as one GEMM and gate/up as one, on stacked copies of those
    weights refreshed at the start of every generate (fewer launches per decode step, for the
    memory of the copies: about 2/3 of the non-embedding weights; BENCHMARKS.md). Off: the
    model's own modules, no copy. Skipped for LoRA projections."""

    compact: bool = True
    """At each host check, when the unfinished rows fit a batch of half the size or less (powers of
    two, at least `compact_min_rows`), move them to the front of the cache and step only that
    prefix (its own graph, captured on first use): finished rows stop costing. Greedy outputs are
    unchanged; sampled ones are drawn from the same distribution, but a row's random stream
    depends on its slot, so a seed gives other samples than with `compact=False`."""
    compact_min_rows: int = 8
    """The smallest batch compaction steps down to."""

    split_kv: bool = True
    """With triton kernels: when the batch's N x kv_heads (sequence, KV head) pairs would leave
    most SMs idle on a long cache, the decode attention divides each pair's cache columns over
    several programs and combines their partial softmaxes in a second launch (split-KV, as
    flash-decoding). The split count comes from the batch's static shape
    (`rlvr.rollout.fast_split_kv.attention_splits`): short caches and large batches keep one
    program per pair. Off: always one program per pair (the A/B baseline)."""

    refill_rows: int = 0
    """Rows decoded at once when a generate call asks for more (0: all of them at once). The
    first samples fill these rows; when a row's completion ends, the next waiting sample is
    prefilled into it mid-generation (`rlvr.rollout.fast_refill`), so the batch stays full while
    samples wait. Bounds the KV cache to these rows (x `refill_horizon` output columns) however
    many sequences are asked for. Sampled rows draw from the same distribution, not the same samples."""
    refill_horizon: int = 3
    """With refill: a run's output columns, in max_new_tokens. A run ends with a drain of up to
    max_new_tokens steps (its last samples finishing, rows emptying), so a deep queue pays one
    drain per run: a longer horizon puts more samples through a run, for a KV cache that long."""

    refill_check_every: int = 32
    """With refill: decode steps between the checks that collect finished rows and prefill
    waiting samples into them. Each check costs a prefill (a few milliseconds of GPU launches
    however few its prompts), and a finished row idles until a check sees it (0.625 of this on
    average): on one H200 at the Qwen2-0.5B shape with 256 rows, 32 beats 16 and 64."""

    def __post_init__(self) -> None:
        # "field: message": rlvr.config.from_dict turns it into the dotted key (stages.3.engine.kernels)
        if self.kernels not in ("auto", "triton", "torch"):
            raise ValueError(f"kernels: must be auto, triton or torch, got {self.kernels!r}")
        for name in ("length_bucket", "check_every", "max_graphs", "compact_min_rows", "refill_horizon",
                     "refill_check_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.refill_rows < 0:
            raise ValueError(f"refill_rows: must be >= 0 (0: no refill), got {self.refill_rows}")


@dataclass
class EngineConfig(FastEngineConfig):
    """A stage's rollout engine: `name` plus the fast engine's options (inherited, so their
    defaults live in `FastEngineConfig` alone)."""

    scalar_key: ClassVar[str] = "name"
    """`engine: fast` is `engine: {name: fast}` (`rlvr.config.from_dict`)."""

    name: str = "auto"
    """auto (fast on CUDA when the model fits, else hf), fast or hf (`rlvr.rollout.ENGINES`)."""

    merge_lora: bool = True
    """A LoRA policy in GRPO generates from a copy with the adapters merged into its projections
    (W + s * B A in the generation dtype, recomputed before each rollout): the decode step runs a
    plain model's kernels instead of peft's two extra GEMMs and two elementwise ops per adapted
    projection, for the memory of the adapted weights (12.2 GiB at the 7B shape). False:
    generate through the adapters, the frozen base shared with the policy."""

    def __post_init__(self) -> None:
        super().__post_init__()
        from rlvr.config import check_field
        from rlvr.rollout import check_engine_name

        check_field("name", lambda: check_engine_name(self.name))

    def fast_options(self) -> FastEngineConfig:
        """The options the fast engine takes (the name left out)."""
        options = asdict(self)
        options.pop("name")
        options.pop("merge_lora")
        return FastEngineConfig(**options)


def as_engine_config(value: EngineConfig | str) -> EngineConfig:
    """`value` as an EngineConfig: a name alone is shorthand for `EngineConfig(name=value)`; an
    unknown name raises the registry's UnknownNameError listing the valid ones."""
    if not isinstance(value, str):
        return value
    from rlvr.rollout import check_engine_name

    check_engine_name(value)
    return EngineConfig(name=value)
