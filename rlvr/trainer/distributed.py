"""What the GRPO loop does differently under each `accelerate launch` engine.

Engines (`engine_name`): `single` (one process), `ddp`, `zero0`/`zero1`/`zero2` (DeepSpeed with
replicated parameters), `zero3` (DeepSpeed, parameters sharded), `fsdp2` (torch `fully_shard`).
FSDP1 is refused: use `fsdp_version: 2` (recipes/accelerate/fsdp2.yaml).

The traps each helper below avoids:
- Sharded parameters (ZeRO-3, FSDP2) are not whole outside their module's forward: generation
  gathers the full model once for the whole `generate` call (`full_parameters`), the fused loss
  gathers the lm_head weight it multiplies with (`loss_weight`), and the saved model comes from the
  engine's gathered state dict (`save_full_policy`).
- The CUDA-graph rollout engine reads parameter storage in place, which sharding swaps out: it is
  refused there (`rollout_engine_name`).
- DeepSpeed steps the optimizer inside `accelerator.backward` whenever accelerate's
  `sync_gradients` is set, so gradient accumulation over micro-batches must clear that flag on all
  but the last micro-batch (`accumulation`); its gradient clipping is DeepSpeed's own, so the
  trainer's `max_grad_norm` is written into the DeepSpeed config before `prepare`.
- Optimizer state is sharded under DeepSpeed and FSDP: checkpoints use `accelerator.save_state` /
  `load_state` there (every process writes its shard), and plain `optimizer.state_dict()` elsewhere.
Every helper is called by every process (none skips a collective).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import torch

from rlvr.trainer.optimizer import KahanAdamW

ENGINE_STATE_DIR = "engine"
"""Checkpoint sub-folder written by `accelerator.save_state` for DeepSpeed / FSDP."""


class DistributedConfigError(ValueError):
    """An engine/option combination the trainer cannot run correctly."""


# ----------------------------------------------------------------------------- which engine

def use_cpu_processes() -> bool:
    """True when launched as several processes on a machine without CUDA.

    accelerate starts gloo only when told `cpu=True`; its torchrun launcher (any multi-process
    config, e.g. recipes/accelerate/cpu2.yaml) does not pass that on, and `accelerate launch --cpu`
    starts a single process unless mpirun is configured. Pass this to `PartialState(cpu=...)` /
    `Accelerator(cpu=...)`, whichever is created first.
    """
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def engine_name(acc) -> str:
    """single, ddp, zero0..zero3, fsdp1 or fsdp2."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        return f"zero{acc.state.deepspeed_plugin.zero_stage}"
    if acc.distributed_type == DistributedType.FSDP:
        return "fsdp2" if getattr(acc, "is_fsdp2", False) else "fsdp1"
    return "ddp" if acc.num_processes > 1 else "single"


def shards_parameters(acc) -> bool:
    """True when no process holds the whole model between forwards (ZeRO-3, FSDP)."""
    return engine_name(acc) in ("zero3", "fsdp1", "fsdp2")


def shards_training_state(acc) -> bool:
    """True when optimizer state is split across processes (any DeepSpeed stage > 0, FSDP)."""
    return engine_name(acc) in ("zero1", "zero2", "zero3", "fsdp1", "fsdp2")


def rollout_engine_name(acc, requested: str, model) -> str:
    """The rollout engine to build for `requested` (`auto`, `hf`, `fast`, ...) and `model`.

    `auto`: `rlvr.rollout.choose_engine` (fast on CUDA when the model fits) with replicated
    parameters, else `hf`. `fast` reads the parameters' storage in place (its CUDA graphs capture
    it), which ZeRO-3 and FSDP free after every forward.
    """
    from rlvr.rollout import choose_engine

    sharded = shards_parameters(acc)
    if requested == "auto":
        return "hf" if sharded or acc.device.type != "cuda" else choose_engine("auto", model)
    if requested == "fast" and sharded:
        raise DistributedConfigError(
            f"grpo.engine=fast cannot run under {engine_name(acc)}: it reads parameter storage in place "
            "and this engine shards the parameters; use engine: hf (or auto)")
    return requested


# ----------------------------------------------------------------------------- prepare

def prepare(acc, model, optimizer, max_grad_norm: float):
    """`acc.prepare(model, optimizer)` after the engine-specific checks and settings."""
    from rlvr.models.loading import is_peft

    name = engine_name(acc)
    if name == "fsdp1":
        raise DistributedConfigError("FSDP1 is not supported by the GRPO trainer; set fsdp_version: 2 "
                                     "(recipes/accelerate/fsdp2.yaml)")
    if is_peft(model) and name in ("zero3", "fsdp2"):
        raise DistributedConfigError(
            f"LoRA under {name} is not supported (the reference policy toggles adapters on sharded "
            "weights); use ddp or zero2, which hold LoRA models whole")
    if isinstance(optimizer, KahanAdamW):
        check_kahan_engine(acc)
    if acc.distributed_type.name == "DEEPSPEED":
        _configure_deepspeed(acc, max_grad_norm)
    if name in ("zero3", "fsdp2") and acc.num_processes > 1:
        _broadcast_from_main(model)  # they keep each process's shard of its own copy (no broadcast)
    return acc.prepare(model, optimizer)


def check_kahan_engine(acc) -> None:
    """KahanAdamW (precision bf16-kahan) steps whole parameters: DeepSpeed and FSDP shard and wrap
    the optimizer (DeepSpeed keeps float32 masters of its own). GRPO and SFT both ask here."""
    name = engine_name(acc)
    if name not in ("single", "ddp"):
        raise DistributedConfigError(
            f"precision bf16-kahan runs on one process or under DDP, not {name}: DeepSpeed and FSDP shard and "
            "wrap the optimizer (DeepSpeed keeps float32 masters of its own); use precision bf16-mixed there")


def _configure_deepspeed(acc, max_grad_norm: float) -> None:
    plugin = acc.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    # prepare() fills the plugin's config in place; a later GRPO stage in the same processes must
    # see what the user wrote, not the previous stage's values
    if not hasattr(plugin, "_rlvr_user_clipping"):
        plugin._rlvr_user_clipping = ds.get("gradient_clipping", "auto")
    ds["gradient_clipping"] = plugin._rlvr_user_clipping
    # No dataloader goes through prepare (each step samples its own rollouts), so DeepSpeed's
    # micro-batch size is never inferred; it only feeds DeepSpeed's own batch bookkeeping.
    if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds["train_micro_batch_size_per_gpu"] = 1
    if ds.get("train_batch_size") == "auto":
        ds.pop("train_batch_size")
    # DeepSpeed clips inside its step; the trainer's max_grad_norm must be what it uses.
    clip = ds.get("gradient_clipping", "auto")
    if clip == "auto":
        ds["gradient_clipping"] = float(max_grad_norm)
    elif float(clip) != float(max_grad_norm):
        raise DistributedConfigError(
            f"DeepSpeed gradient_clipping={clip} (accelerate config) differs from grpo.max_grad_norm="
            f"{max_grad_norm}; DeepSpeed does the clipping, so make them equal or drop gradient_clipping")


@torch.no_grad()
def _broadcast_from_main(model) -> None:
    import torch.distributed as dist

    for p in model.parameters():
        dist.broadcast(p.data, src=0)
    for b in model.buffers():
        dist.broadcast(b.data, src=0)


# ----------------------------------------------------------------------------- generation

@contextlib.contextmanager
def full_parameters(acc, model):
    """Every parameter whole on every process for the duration (e.g. one `generate` call).

    ZeRO-3: DeepSpeed's `unwrap_model_for_generation` gathers all parameters once and removes the
    per-module fetch/release hooks (otherwise every decode step re-gathers every layer). FSDP2:
    each FSDP module is unsharded and told not to reshard after forward until the block ends.
    Elsewhere a no-op. A collective: every process enters it.
    """
    name = engine_name(acc)
    if name == "zero3":
        from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

        with unwrap_model_for_generation(model):
            yield
    elif name == "fsdp2":
        with _fsdp2_unsharded(model):
            yield
    else:
        yield


@contextlib.contextmanager
def _fsdp2_unsharded(model):
    from torch.distributed.fsdp import FSDPModule

    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    saved = [_reshard_flags(m) for m in modules]
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m, flags in zip(modules, saved):
            _restore_reshard_flags(m, flags)
            m.reshard()


def _param_groups(state) -> list:
    # torch >= 2.12 keeps a list of groups per module, older releases a single one
    groups = getattr(state, "_fsdp_param_groups", None)
    if groups is not None:
        return list(groups)
    group = getattr(state, "_fsdp_param_group", None)
    return [group] if group is not None else []


def _reshard_flags(module):
    # FSDP2 has a setter but no getter for reshard_after_forward; it lives on the param groups
    # (and, for the root's default, on the state).
    state = module._get_fsdp_state()
    return (getattr(state, "_auto_reshard_after_forward", None),
            [g.post_forward_mesh_info for g in _param_groups(state)])


def _restore_reshard_flags(module, flags) -> None:
    state = module._get_fsdp_state()
    auto, infos = flags
    if hasattr(state, "_auto_reshard_after_forward"):
        state._auto_reshard_after_forward = auto
    for g, info in zip(_param_groups(state), infos):
        g.post_forward_mesh_info = info


# ----------------------------------------------------------------------------- training step

@contextlib.contextmanager
def accumulation(acc, model, last: bool):
    """Gradient accumulation over micro-batches: gradients are reduced (and, under DeepSpeed, the
    optimizer steps) only on the `last` micro-batch. Same calls on every process."""
    if last:
        yield
        return
    if acc.distributed_type.name == "DEEPSPEED":
        # accelerate calls engine.step() inside backward whenever sync_gradients is set
        acc.gradient_state._set_sync_gradients(False)
        try:
            yield
        finally:
            acc.gradient_state._set_sync_gradients(True)
    else:
        with acc.no_sync(model):  # DDP: no all-reduce; FSDP2: no reduce-scatter
            yield


@contextlib.contextmanager
def loss_weight(acc, model, weight: torch.Tensor):
    """The lm_head weight (V, H) the fused loss multiplies hidden states with, whole, for a block
    entered AFTER the forward pass and holding the loss and its backward.

    `weight` (taken from the unwrapped model) is right for replicated parameters and for modules
    that were not prepared (the frozen reference). ZeRO-3: gathered for the block (gradients flow
    to the full parameter and DeepSpeed reduce-scatters them). FSDP2: accelerate keeps the
    embeddings/lm_head group unsharded from its forward until its post-backward, so the weight is
    read from the module after the forward (before it, it is a sharded DTensor).
    """
    name = engine_name(acc)
    if name not in ("zero3", "fsdp2") or not any(model is m for m in acc._models):
        yield weight
        return
    head = acc.unwrap_model(model).get_output_embeddings()
    if name == "zero3":
        import deepspeed

        with deepspeed.zero.GatheredParameters([head.weight], modifier_rank=None):
            yield head.weight
    else:
        w = head.weight
        if type(w).__name__ == "DTensor":
            raise RuntimeError("FSDP2: the lm_head weight is still sharded after the forward; the "
                               "output embeddings must be in a group that does not reshard after forward")
        yield w


# ----------------------------------------------------------------------------- checkpoints

def save_full_policy(acc, model, policy, save_policy, directory) -> None:
    """Save the whole policy with `save_policy` semantics (safetensors + tokenizer, atomic).

    Replicated engines: the main process saves the unwrapped model. ZeRO-3 / FSDP2: the engine's
    gathered state dict (`acc.get_state_dict`, a collective; ZeRO-3 needs `zero3_save_16bit_model`)
    is written by the main process with `save_pretrained(state_dict=...)`.
    """
    unwrapped = acc.unwrap_model(model)
    if not shards_parameters(acc):
        _write_param_digest(acc, unwrapped, Path(directory))
        if acc.is_main_process:
            save_policy(dataclasses.replace(policy, model=unwrapped), directory)
        acc.wait_for_everyone()
        return
    full = acc.get_state_dict(model)  # every process takes part; the main one gets the tensors
    if acc.is_main_process:
        directory = Path(directory)
        staging = directory.with_name(f".tmp-{directory.name}")
        shutil.rmtree(staging, ignore_errors=True)
        unwrapped.save_pretrained(staging, state_dict=full, safe_serialization=True)
        policy.tokenizer.save_pretrained(staging)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    acc.wait_for_everyone()


PARAM_DIGEST_ENV = "RLVR_PARAM_DIGEST_DIR"
"""Debug option: when this environment variable names a folder, every process writes there a
SHA-256 of its own parameters each time the policy is saved (`<run folder>-rank-<p>.sha256`), so a
multi-process test can check that replicated engines kept every copy identical."""


def _write_param_digest(acc, model, directory: Path) -> None:
    folder = os.environ.get(PARAM_DIGEST_ENV)
    if not folder:
        return
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(p.detach().float().cpu().numpy().tobytes())
    Path(folder).mkdir(parents=True, exist_ok=True)
    owner = directory.parent.name.removeprefix(".tmp-")  # the stage folder or the checkpoint step
    (Path(folder) / f"{owner}-rank-{acc.process_index}.sha256").write_text(digest.hexdigest())


def save_training_state(acc, optimizer, directory: Path) -> None:
    """Optimizer (and, for sharded engines, model) state into `directory`. Collective."""
    if shards_training_state(acc):
        acc.save_state(str(Path(directory) / ENGINE_STATE_DIR))
    elif acc.is_main_process:
        torch.save(optimizer.state_dict(), Path(directory) / "optimizer.pt")


def load_sharded_training_state(acc, path: Path, saved_world_size: int) -> bool:
    """Restore model + optimizer shards written by `save_training_state`; False when the engine
    keeps whole state (the caller then loads trainable weights and optimizer.pt itself).

    DeepSpeed checkpoints hold one optimizer partition per process: resuming needs the same number
    of processes (or DeepSpeed's universal-checkpoint conversion). FSDP2 saves full state dicts
    (FULL_STATE_DICT), which load onto any number of processes.
    """
    if not shards_training_state(acc):
        return False
    engine_dir = Path(path) / ENGINE_STATE_DIR
    if not engine_dir.is_dir():
        raise FileNotFoundError(f"resume: {engine_dir} is missing; the checkpoint was not written by "
                                f"{engine_name(acc)} (resume with the engine that wrote it)")
    if engine_name(acc).startswith("zero") and saved_world_size != acc.num_processes:
        raise DistributedConfigError(
            f"resume: {path} was written by {saved_world_size} DeepSpeed processes, now "
            f"{acc.num_processes}; DeepSpeed optimizer partitions load on the same count only "
            "(convert with deepspeed.checkpoint.ds_to_universal, or resume with the original count)")
    acc.load_state(str(engine_dir))
    return True


__all__ = ["DistributedConfigError", "accumulation", "check_kahan_engine", "engine_name", "full_parameters",
           "load_sharded_training_state", "loss_weight", "prepare", "rollout_engine_name",
           "save_full_policy", "save_training_state", "shards_parameters", "shards_training_state",
           "use_cpu_processes"]
