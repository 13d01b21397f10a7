"""The stage registry: one entry per stage `type`, each with its own typed options.

A recipe's stage is a tagged union: `type` picks the entry, and the remaining keys of the stage
(besides the common `name`, `model_from`, `dataset_from`) are validated by that entry's options
dataclass. The pipeline runner never branches on the type name; it asks the entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rlvr.registry import Registry

STAGE_KINDS: Registry["StageKind"] = Registry("stage type", valid_label="valid types")
BASE = "base"
"""`model_from: base` starts a stage from the recipe's base model."""
GENERATOR = "generator"
"""`dataset_from: generator` trains on the task's worked solutions."""


@dataclass(frozen=True)
class StageKind:
    """What the pipeline needs to know about one stage type."""

    type: str
    """The `type` value in a recipe."""
    options: Callable[[], type]
    """Returns the options dataclass (a function, so heavy imports wait until a recipe uses it)."""
    run: Callable[..., dict[str, Any]]
    """`run(ctx: StageContext, options) -> metrics`."""
    trains: bool
    """True when the stage writes `model/` (later stages read it by default)."""
    reads_dataset: bool = False
    """True when the stage takes `dataset_from` (and must have it)."""
    writes_dataset: bool = False
    """True when a later stage may name this one in `dataset_from`."""
    scores_held_out: bool = False
    """True when its metrics' `accuracy` is held-out accuracy (listed in summary.json's
    `accuracy_per_stage`; a grpo stage's own `accuracy` is on its training batches)."""


def register_stage(type: str, options: Callable[[], type], *, trains: bool,
                   reads_dataset: bool = False, writes_dataset: bool = False, scores_held_out: bool = False):
    """Decorator registering `run` as the runner of stage `type`; a duplicate name raises."""

    def deco(run):
        STAGE_KINDS.add(type, StageKind(type, options, run, trains, reads_dataset, writes_dataset, scores_held_out))
        return run

    return deco


def stage_kind(type: str) -> StageKind:
    """The registered entry for `type`; an unknown type raises UnknownNameError listing the valid ones."""
    return STAGE_KINDS.get(type)
