"""Shared helpers of the GPU benchmarks: device timing, peak memory, the result table, a record,
the model shapes, and rlvr's GRPO step on a word-prompt workload (bench_grpo_step, bench_multigpu,
bench_memory).

Timing: warm up first, time with CUDA events (or synchronise
before reading the host clock), repeat, report the median. Every benchmark prints a table whose
ratio column compares each row with the peer named as baseline, and writes a JSON record
(environment, command, commit, rows) to --out.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch


@dataclass
class Row:
    name: str
    """What was measured (peer or ours, with its settings)."""
    value: float | None
    """The measured figure (ms or tok/s; see `unit`); None when the row could not run."""
    unit: str
    """"ms", "us", "s" (lower is better) or "tok/s" (higher is better)."""
    peak_gib: float | None = None
    """Peak device memory above what was allocated before the measured call (GiB)."""
    note: str = ""
    """Why a row is missing, or its settings."""
    samples: list[float] = field(default_factory=list)
    """Every timed repetition, before the median."""


def environment() -> dict:
    props = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
    # the device machine gets the working tree without .git: the caller passes RLVR_COMMIT there
    commit = os.environ.get("RLVR_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    check=False).stdout.strip()
        except OSError:
            commit = ""
    import transformers

    try:
        import triton
    except ImportError:  # a CPU smoke run
        triton = None
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": props.name if props else "none",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": triton.__version__ if triton else "none",
        "commit": commit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def sync() -> None:
    """Wait for the GPU (nothing to wait for in a CPU smoke run)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cuda_time_ms(fn: Callable[[], object], warmup: int, reps: int) -> list[float]:
    """Wall time of `fn` in ms, measured with CUDA events, `reps` times after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def graph_replay_us(fn: Callable[[], object], calls: int, reps: int) -> list[float]:
    """Microseconds per call of `fn`, from a CUDA graph of `calls` calls replayed `reps` times: eager
    launches from Python take longer than small kernels, so only a replayed graph times the GPU's
    work as the engine runs it. `fn` runs once first on a side stream (compiles, allocator warm-up)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return [t * 1e3 / calls for t in cuda_time_ms(graph.replay, warmup=2, reps=reps)]


def host_time_s(fn: Callable[[], object], reps: int) -> list[float]:
    """Host wall time in seconds (for work with host syncs inside, e.g. generation)."""
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def peak_above(fn: Callable[[], object]) -> float:
    """Peak memory (GiB) allocated by one call of `fn` above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def print_table(title: str, rows: list[Row], baseline: str) -> None:
    """Rows with a ratio to the row named `baseline` (speed-up: >1 is better than the baseline)."""
    base = next((r for r in rows if r.name == baseline and r.value), None)
    print(f"\n## {title}")
    print(f"| what | {rows[0].unit if rows else ''} | peak GiB | vs {baseline} | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        if r.value is None:
            ratio = "-"
        elif base is None:
            ratio = "?"
        elif r.unit in ("ms", "s", "us"):
            ratio = f"{base.value / r.value:.2f}x"
        else:
            ratio = f"{r.value / base.value:.2f}x"
        value = "-" if r.value is None else f"{r.value:,.1f}"
        peak = "-" if r.peak_gib is None else f"{r.peak_gib:.2f}"
        print(f"| {r.name} | {value} | {peak} | {ratio} | {r.note} |")
    sys.stdout.flush()


def save(path: str | None, title: str, rows: list[Row], extra: dict | None = None) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    record = {"title": title, "env": environment(), "rows": [asdict(r) for r in rows], **(extra or {})}
    Path(path).write_text(json.dumps(record, indent=1))


def out_path(name: str) -> str | None:
    """Where a benchmark writes its JSON: $OUT/<name> on the device machine, else nowhere."""
    out = os.environ.get("OUT")
    return str(Path(out) / name) if out else None


SHAPES = {
    "0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),  # Qwen2-0.5B
    "1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),  # Qwen2.5-1.5B
    "7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),  # Qwen2.5-7B
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),  # CPU smoke runs
}
"""Model shapes of the benchmarks (Qwen2 architecture, random weights)."""


def build_model(shape: str, device: str, eos_token_id: int | None, train: bool = False):
    """A Qwen2 model of `shape` with random weights (seed 0), bf16 on CUDA (fp32 on the CPU)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, rope_theta=1e6, bos_token_id=None,
                         eos_token_id=eos_token_id, pad_token_id=0)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.train(train)
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.pad_token_id = 0
    return model


def shape_label(shape: str) -> str:
    return {"0.5b": "Qwen2-0.5B shape", "1.5b": "Qwen2.5-1.5B shape", "7b": "Qwen2.5-7B shape"}.get(shape, shape)


def memory_gib(peak: bool = False) -> float | None:
    """CUDA memory allocated now (or its peak since the last reset), GiB; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()) / 2**30


# ----------------------------------------------------------------------------- rlvr's GRPO step
# The workload of bench_grpo_step.py, bench_multigpu.py and bench_memory.py: prompts of random
# words (one word, one token) and a pseudo-random reward, so every model shape runs it unchanged.

def word_tokenizer(vocab: int):
    """Word-level tokenizer: `w<i>` is token i; "Q:" and "A:" (the plain template) are tokens too.

    EOS is a token id (1) the prompts never contain; a random model samples it with probability
    about 1/V per token, so nearly every completion runs the full length.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, "Q:": 3, "A:": 4}
    words.update({f"w{i}": i for i in range(5, vocab)})
    core = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left")


def word_prompt(i: int, vocab: int, prompt_len: int) -> str:
    """Prompt i: `prompt_len` - 2 random words, which the plain template ("Q: ... A:") makes
    `prompt_len` tokens."""
    g = torch.Generator().manual_seed(i)
    return " ".join(f"w{t}" for t in torch.randint(5, vocab, (prompt_len - 2,), generator=g).tolist())


class WordTask:
    """TaskSource of fixed-length word prompts (the reward ignores `reference`)."""

    difficulty = 1

    def __init__(self, vocab: int, prompt_len: int):
        self.vocab, self.prompt_len = vocab, prompt_len
        self.position = 0

    def sample(self, n):
        from rlvr.tasks.base import Example

        out = [Example(prompt=word_prompt(self.position + k, self.vocab, self.prompt_len), reference="",
                       kind="bench", id=str(self.position + k)) for k in range(n)]
        self.position += n
        return out

    def held_out(self, n):
        return []

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]

    def set_difficulty(self, level):
        self.difficulty = level


def text_reward(text: str) -> float:
    return (zlib.crc32(text.encode()) % 1000) / 1000.0


def rlvr_reward(examples, texts, lengths, truncated, cfg):
    """rlvr's RewardFn over `text_reward`."""
    from rlvr.rewards import RewardOutput

    scores = [text_reward(t) for t in texts]
    return RewardOutput(total=scores, per_verifier={"bench": scores}, correct=[s > 0.5 for s in scores])


class StopBenchmark(Exception):
    """Raised by `CountedTask` when the measured steps are over: ends `run_grpo` before its final
    checkpoint and model save (gigabytes at the larger shapes)."""


class CountedTask:
    """A task that raises StopBenchmark when asked for step `last_step + 1`'s prompts."""

    def __init__(self, inner, last_step: int):
        self.inner = inner
        self.draws = 0
        self.last_step = last_step
        self.difficulty = 1

    def sample(self, n):
        self.draws += 1
        if self.draws > self.last_step:
            raise StopBenchmark
        return self.inner.sample(n)

    def held_out(self, n):
        return []

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def set_difficulty(self, level):
        self.difficulty = level


def grpo_config(prompts: int, group: int, new_tokens: int, steps: int, **options):
    """rlvr's GRPOConfig of the benchmarks: temperature 1, plain template, fast engine, AdamW lr
    1e-6, loss dapo, beta 0, one update per batch, no samples, trackers or periodic checkpoints;
    `options` are further GRPOConfig keys (they win)."""
    from rlvr.config import from_dict
    from rlvr.trainer.config import GRPOConfig

    settings = dict(steps=steps, prompts_per_step=prompts, num_generations=group, max_new_tokens=new_tokens,
                    temperature=1.0, template="plain", engine="fast", learning_rate=1e-6, loss_type="dapo",
                    beta=0.0, sample_every=0, save_every=0, report_to="none", keep_last=1)
    return from_dict(GRPOConfig, {**settings, **options})


def rlvr_policy(model, tokenizer, precision: str, lora=None, checkpointing: bool = False):
    """rlvr's Policy over a benchmark model, prepared as `load_policy` prepares a loaded one: the
    weights in the dtype `precision` trains them in (float32 masters under bf16-mixed), activation
    checkpointing when asked, then LoRA adapters when `lora` (rlvr.models.config.LoraSettings)."""
    from rlvr.models.config import ModelConfig
    from rlvr.models.loading import Policy, apply_lora, enable_checkpointing
    from rlvr.models.precision import weight_dtype

    model = model.to(weight_dtype(precision, train=True, frozen=lora is not None))
    if checkpointing:
        enable_checkpointing(model)
    if lora is not None:
        model = apply_lora(model, ModelConfig(lora=lora))
    return Policy(model=model, tokenizer=tokenizer, precision=precision)


def run_grpo_steps(policy, task, cfg, workdir: Path, reward_fn=rlvr_reward) -> list[dict]:
    """`cfg.steps` steps of rlvr's `run_grpo`, stopped before its final checkpoint; the metrics
    row of every step (`time/step`, `time/generate`, ...)."""
    from dataclasses import replace

    from rlvr.trainer.grpo import run_grpo

    steps = cfg.steps
    # one step more than measured: run_grpo saves after its last step, the stop comes before it
    try:
        run_grpo(policy, CountedTask(task, steps), replace(cfg, steps=steps + 1), workdir, reward_fn=reward_fn)
    except StopBenchmark:
        pass
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
