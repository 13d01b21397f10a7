"""ORM and PRM: a transformer backbone with a scalar value head.

One class serves both: the ORM reads its score at the last token of a solution, the PRM at the
last token of every step (see `steps.encode_steps`). Scores are probabilities (sigmoid of the
head's logit); a solution's PRM score aggregates its step scores with `last`, `min`, `prod` or
`mean` (Lightman et al. 2305.20050 use the product; search-and-learn offers last/min/prod).

On disk (`save`/`load`): `reward_model.json` (kind, separator, ...), `backbone/` (transformers
`save_pretrained`, safetensors), `value_head.safetensors`, and the tokenizer files.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from rlvr.errors import UserError
from rlvr.reward_models.steps import DEFAULT_SEPARATOR, encode_steps, split_steps

CONFIG_FILE = "reward_model.json"
HEAD_FILE = "value_head.safetensors"
AGGREGATIONS = ("last", "min", "prod", "mean")


class RewardModelError(UserError, ValueError):
    """A reward model that cannot be loaded or used as asked."""


@dataclass
class RewardModelConfig:
    """What a saved reward model is."""

    kind: Literal["orm", "prm"]
    """orm: one score per solution (outcome); prm: one score per step (process)."""
    step_separator: str = DEFAULT_SEPARATOR
    """The text that ends a step; the PRM must be queried with the separator it was trained on."""
    label_type: Literal["hard", "soft"] = "hard"
    """How the training labels were made (PRM: Math-Shepherd hard = any rollout correct, soft = fraction)."""
    base: str = ""
    """Where the backbone came from (a policy path or 'tiny'), for the record."""


def aggregate(step_scores: list[float], aggregation: str) -> float:
    """One solution score from its step scores.

    >>> aggregate([0.9, 0.5, 0.8], "min"), aggregate([0.5, 0.5], "prod")
    (0.5, 0.25)
    """
    if aggregation not in AGGREGATIONS:
        raise RewardModelError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    if not step_scores:
        return 0.0  # no steps: nothing was said, nothing earns credit
    if aggregation == "last":
        return step_scores[-1]
    if aggregation == "min":
        return min(step_scores)
    if aggregation == "prod":
        return math.prod(step_scores)
    return sum(step_scores) / len(step_scores)


class RewardModel(nn.Module):
    """Backbone (B, T) -> hidden (B, T, H) -> value head -> logits (B, T)."""

    def __init__(self, backbone: nn.Module, tokenizer, config: RewardModelConfig):
        super().__init__()
        if config.kind not in ("orm", "prm"):
            raise RewardModelError(f"reward model kind must be 'orm' or 'prm', got {config.kind!r}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        hidden = backbone.config.hidden_size
        self.score_batch_size = 16
        """Solutions per forward when scoring (raise it on a GPU)."""
        self.head = nn.Linear(hidden, 1, device=next(backbone.parameters()).device)  # beside the backbone
        nn.init.zeros_(self.head.weight)  # start at score 0.5 everywhere: no accidental preferences
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_policy(cls, model, tokenizer, kind: str, **config) -> "RewardModel":
        """A reward model on a copy of a causal LM's backbone (the policy stays untouched)."""
        backbone = copy.deepcopy(model.base_model if hasattr(model, "base_model") else model)
        return cls(backbone, tokenizer, RewardModelConfig(kind=kind, **config))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # fp32 weights on a GPU run their matmuls in bf16 (as mixed-precision training does).
        fast = input_ids.is_cuda and self.head.weight.dtype == torch.float32
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=fast):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)  # (B, T)

    # ---- scoring -------------------------------------------------------------------------
    def positions(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """(ids, score positions): every step end for a PRM, only the last for an ORM."""
        ids, ends = encode_steps(self.tokenizer, problem, steps, self.config.step_separator)
        if self.config.kind == "orm":
            ends = ends[-1:]
        return ids, ends

    @torch.no_grad()
    def step_scores(self, problem: str, solutions: list[list[str]], batch_size: int | None = None) -> list[list[float]]:
        """Probabilities at each scored position, per solution (a PRM: one per step)."""
        return self.step_scores_many([(problem, steps) for steps in solutions], batch_size)

    @torch.no_grad()
    def step_scores_many(self, pairs: list[tuple[str, list[str]]], batch_size: int | None = None) -> list[list[float]]:
        """`step_scores` of (problem, steps) pairs from many problems, in shared forwards."""
        encoded = [self.positions(problem, steps) for problem, steps in pairs]
        # Similar lengths share a forward: far less padding than the arrival order.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        size = batch_size or self.score_batch_size
        out: list[list[float]] = [[] for _ in encoded]
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            probs = torch.sigmoid(self._logits([encoded[i][0] for i in idx]).float()).cpu()  # (b, T)
            for i, row in zip(idx, probs):
                out[i] = row[encoded[i][1]].tolist()
        return out

    def score(self, problem: str, steps: list[str], aggregation: str = "last") -> float:
        """The score of one (partial) solution given as steps."""
        return self.score_batch(problem, [steps], aggregation)[0]

    def score_batch(self, problem: str, solutions: list[list[str]], aggregation: str = "last") -> list[float]:
        aggregate([], aggregation)  # validate the name before any model work
        return [aggregate(s, aggregation) for s in self.step_scores(problem, solutions)]

    def score_texts(self, problem: str, texts: list[str], aggregation: str = "last") -> list[float]:
        """Scores of solution texts, cut into steps at this model's separator."""
        return self.score_texts_many([(problem, texts)], aggregation)[0]

    def score_texts_many(self, items: list[tuple[str, list[str]]], aggregation: str = "last") -> list[list[float]]:
        """`score_texts` for several problems at once: one list of scores per (problem, texts) item."""
        aggregate([], aggregation)  # validate the name before any model work
        sep = self.config.step_separator
        pairs = [(problem, split_steps(t, sep) or [t]) for problem, texts in items for t in texts]
        flat = [aggregate(s, aggregation) for s in self.step_scores_many(pairs)]
        out = []
        for _, texts in items:
            out.append(flat[: len(texts)])
            flat = flat[len(texts):]
        return out

    def num_tokens(self, problem: str, texts: list[str]) -> int:
        """Tokens this model reads to score `texts` (for the scored-token ledger)."""
        sep = self.config.step_separator
        return sum(len(self.positions(problem, split_steps(t, sep) or [t])[0]) for t in texts)

    def _logits(self, seqs: list[list[int]]) -> torch.Tensor:
        device = next(self.parameters()).device
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):  # right padding: positions stay where encode_steps put them
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return self(ids.to(device), mask.to(device))

    # ---- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(tmp / "backbone", safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, tmp / HEAD_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2))
        if directory.exists():
            import shutil

            shutil.rmtree(directory)
        tmp.rename(directory)  # written whole, then moved into place
        return directory


def load_reward_model(path: str | Path, expect: str | None = None, device: str | None = None) -> RewardModel:
    """Load a saved ORM/PRM; `expect='prm'` (or 'orm') refuses the other kind with a clear error."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from rlvr.config import from_dict

    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        what = "does not exist" if not path.exists() else f"has no {CONFIG_FILE}"
        raise RewardModelError(
            f"{path} is not a reward model: it {what} (train one with `rlvr train-rm --kind orm|prm "
            f"--output-dir {path} ...`)"
        )
    try:
        cfg = from_dict(RewardModelConfig, json.loads(cfg_file.read_text()), path=str(cfg_file))
    except (ValueError, json.JSONDecodeError) as e:
        raise RewardModelError(f"{cfg_file}: not a valid reward model config: {e}") from e
    if expect is not None and cfg.kind != expect:
        raise RewardModelError(f"{path} is a {cfg.kind.upper()}, not a {expect.upper()}")
    backbone = AutoModel.from_pretrained(path / "backbone")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = RewardModel(backbone, tokenizer, cfg)
    model.head.load_state_dict(load_file(path / HEAD_FILE))
    model.eval()
    return model.to(device) if device else model
