"""Problems from a dataset: a Hugging Face hub name or local jsonl/json/parquet/csv files.

`load_dataset_task(source, mapping=..., split=..., preset=...)` reads every row through
`datasets`, checks it, and turns it into an `Example`. A row that cannot be used (missing or
empty field, no `#### ` answer, no `\\boxed{}`) stops the load with an error naming the row
index and the field, before any training starts.

Presets:
- `gsm8k`: prompt `question`, answer after `#### ` in `answer` (thousands commas removed), the
  text before it (calculator annotations `<<...>>` dropped) as the worked reasoning; held out: `test`.
- `math`: prompt `problem`, answer = the last `\\boxed{...}` of `solution` (nested braces kept),
  the solution as the worked reasoning, `level` ("Level 3") as the difficulty; held out: `test`.
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlvr.config import from_dict
from rlvr.tasks.base import Example
from rlvr.tasks.generator import prompt_bucket, r1_solution
from rlvr.tasks.registry import register_task


class DatasetRowError(ValueError):
    """A dataset row that cannot become an Example; the message names the row and the field."""


@dataclass
class FieldMapping:
    """Which columns of a row make an Example, and how to read the answer."""

    prompt: str = "question"
    """Column with the problem text."""
    answer: str = "answer"
    """Column with the answer (or a solution text the answer is extracted from)."""
    extract: str = "plain"
    """How to get the final answer from the answer column: `plain` (the text, stripped),
    `gsm8k` (after `#### `, commas removed) or `boxed` (last `\\boxed{}`)."""
    solution: str | None = None
    """Column whose text becomes the reasoning of the worked solution (for SFT); None: no solution."""
    difficulty: str | None = None
    """Column with the level: an integer or text holding one ("Level 3"); None: every row is level 1."""
    kind: str = "math"
    """Verifier kind of the examples."""


PRESETS: dict[str, tuple[FieldMapping, str]] = {
    "gsm8k": (FieldMapping(prompt="question", answer="answer", extract="gsm8k", solution="answer"), "test"),
    "math": (FieldMapping(prompt="problem", answer="solution", extract="boxed", solution="solution",
                          difficulty="level"), "test"),
}
"""preset -> (field mapping, held-out split)."""


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces included; None if absent."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None  # unbalanced braces


def gsm8k_answer(text: str) -> str | None:
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "")


def _gsm8k_reasoning(text: str) -> str:
    return re.sub(r"<<[^>]*>>", "", text.rsplit("####", 1)[0]).strip()


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "plain": lambda text: text.strip(),
    "gsm8k": gsm8k_answer,
    "boxed": last_boxed,
}
REASONING: dict[str, Callable[[str], str]] = {"gsm8k": _gsm8k_reasoning}
"""How the solution column becomes reasoning for an extractor; default: the text, stripped."""

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _load_split(source: str | dict[str, str], split: str, subset: str | None):
    """One split as a `datasets.Dataset`, from local files or the hub."""
    import datasets

    files = source if isinstance(source, dict) else ({split: source} if Path(source).exists() else None)
    if files is None:  # not a local path: a hub dataset
        return datasets.load_dataset(source, subset, split=split)
    if split not in files:
        raise ValueError(f"dataset: no file for split {split!r}; files given for {sorted(files)}")
    suffix = Path(files[split]).suffix.lower()
    if suffix not in LOCAL_BUILDERS:
        raise ValueError(f"dataset: {files[split]}: unsupported file type {suffix!r}; use one of {sorted(LOCAL_BUILDERS)}")
    if not Path(files[split]).is_file():
        raise ValueError(f"dataset: file not found: {files[split]}")
    return datasets.load_dataset(LOCAL_BUILDERS[suffix], data_files={split: str(files[split])}, split=split)


def _field(row: dict, name: str, index: int, where: str) -> str:
    if name not in row:
        raise DatasetRowError(f"{where} row {index}: field {name!r} is missing; columns are {sorted(row)}")
    value = row[name]
    if value is None:  # datasets fills a column absent from some rows with None
        raise DatasetRowError(f"{where} row {index}: field {name!r} is missing (null)")
    if isinstance(value, str) and not value.strip():
        raise DatasetRowError(f"{where} row {index}: field {name!r} is empty")
    return value if isinstance(value, str) else str(value)


def _level(value: Any, index: int, field: str, where: str) -> int:
    digits = re.findall(r"\d+", str(value))
    if not digits:
        raise DatasetRowError(f"{where} row {index}: field {field!r} holds no level number: {value!r}")
    return int(digits[0])


def row_to_example(row: dict, index: int, mapping: FieldMapping, where: str, split: str) -> Example:
    prompt = _field(row, mapping.prompt, index, where)
    answer_text = _field(row, mapping.answer, index, where)
    answer = EXTRACTORS[mapping.extract](answer_text)
    if not answer:
        how = {"gsm8k": "no '#### answer'", "boxed": "no \\boxed{} answer"}.get(mapping.extract, "empty answer")
        raise DatasetRowError(f"{where} row {index}: field {mapping.answer!r} has {how}")
    solution = None
    if mapping.solution:
        reasoning = REASONING.get(mapping.extract, str.strip)(_field(row, mapping.solution, index, where))
        solution = r1_solution(reasoning, answer)
    level = 1
    if mapping.difficulty:
        level = _level(_field(row, mapping.difficulty, index, where), index, mapping.difficulty, where)
    return Example(prompt=prompt.strip(), reference=answer, kind=mapping.kind, difficulty=level,
                   solution=solution, id=f"dataset/{split}/{index}", meta={"split": split, "row": index})


def _examples(source: str | dict[str, str], split: str, subset: str | None, mapping: FieldMapping) -> list[Example]:
    where = f"{source if isinstance(source, str) else source.get(split)} [{split}]"
    rows = _load_split(source, split, subset)
    return [row_to_example(row, i, mapping, where, split) for i, row in enumerate(rows)]


def resolve_mapping(mapping: FieldMapping | dict | None, preset: str | None) -> tuple[FieldMapping, str | None]:
    """The preset's mapping with `mapping`'s keys on top; also the preset's held-out split."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"dataset: unknown preset {preset!r}; valid presets: {', '.join(sorted(PRESETS))}")
    base, held_out_split = PRESETS[preset] if preset else (FieldMapping(), None)
    if isinstance(mapping, FieldMapping):
        resolved = mapping
    else:
        resolved = from_dict(FieldMapping, {**dataclasses.asdict(base), **(mapping or {})}, "mapping")
    if resolved.extract not in EXTRACTORS:
        raise ValueError(f"mapping.extract: unknown extractor {resolved.extract!r}; valid: {', '.join(sorted(EXTRACTORS))}")
    return resolved, held_out_split


class DatasetSource:
    """A TaskSource over loaded examples: shuffled per epoch by seed, position in `state_dict`."""

    name = "dataset"

    def __init__(self, train: list[Example], held_out: list[Example], seed: int = 0,
                 difficulty: int | list[int] | None = None, label: str = "dataset"):
        if not train:
            raise ValueError(f"{label}: no training rows")
        self.label = label
        self.seed = seed
        self._train = train
        self._held = held_out
        self.levels_available = sorted({ex.difficulty for ex in train})
        self._position = 0
        self.set_difficulty(self.levels_available if difficulty is None else difficulty)

    @property
    def difficulty(self) -> int | list[int]:
        return self._levels[0] if len(self._levels) == 1 else list(self._levels)

    @property
    def num_train(self) -> int:
        """Training rows at the current difficulty (one epoch)."""
        return len(self._pool)

    @property
    def num_held_out(self) -> int:
        """Held-out rows at the current difficulty (the most `held_out(n)` can give)."""
        return sum(ex.difficulty in self._levels for ex in self._held)

    def set_difficulty(self, level: int | list[int]) -> None:
        levels = [level] if isinstance(level, int) else list(level)
        missing = [lv for lv in levels if lv not in self.levels_available]
        if missing or not levels:
            hint = "" if len(self.levels_available) > 1 else " (set mapping.difficulty to a level column)"
            raise ValueError(f"{self.label}: no rows at difficulty {missing or levels}; "
                             f"levels present: {self.levels_available}{hint}")
        self._levels = levels
        self._pool = [i for i, ex in enumerate(self._train) if ex.difficulty in levels]
        self._order_cache: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._order_cache:
            order = list(self._pool)
            random.Random(f"dataset:{self.seed}:{epoch}:{self._levels}").shuffle(order)
            self._order_cache = {epoch: order}  # keep one epoch: the stream only moves forward
        return self._order_cache[epoch]

    def sample(self, n: int) -> list[Example]:
        out = []
        for _ in range(n):
            epoch, offset = divmod(self._position, len(self._pool))
            out.append(self._train[self._order(epoch)[offset]])
            self._position += 1
        return out

    def held_out(self, n: int) -> list[Example]:
        pool = [ex for ex in self._held if ex.difficulty in self._levels]
        if n > len(pool):
            raise ValueError(f"{self.label}: asked for {n} held-out problems, only {len(pool)} at difficulty "
                             f"{self.difficulty}")
        random.Random(f"dataset:{self.seed}:held_out").shuffle(pool)
        return pool[:n]

    def state_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "position": self._position, "difficulty": list(self._levels)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name or state.get("seed") != self.seed:
            raise ValueError(f"{self.label}: state is from {state.get('name')!r} seed {state.get('seed')!r}, "
                             f"this source is {self.name!r} seed {self.seed}")
        self.set_difficulty(state["difficulty"])
        self._position = int(state["position"])


def load_dataset_task(source: str | dict[str, str], mapping: FieldMapping | dict | None = None,
                      split: str = "train", preset: str | None = None, *, subset: str | None = None,
                      held_out_split: str | None = None, held_out_fraction: float = 0.1, seed: int = 0,
                      difficulty: int | list[int] | None = None) -> DatasetSource:
    """A TaskSource from a dataset.

    source: a hub name (`openai/gsm8k`, with `subset="main"`), a local file, or `{split: file}`.
    The held-out problems come from `held_out_split` (a preset names `test`) when the source has
    it, otherwise from a `held_out_fraction` of the training rows chosen by a hash of the prompt.
    `difficulty` keeps the rows at those levels of the mapping's difficulty column (None: every row;
    without a difficulty column every row is level 1).
    """
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"dataset: held_out_fraction must be in [0, 1), got {held_out_fraction}")
    resolved, preset_split = resolve_mapping(mapping, preset)
    held_out_split = held_out_split or preset_split
    train = _examples(source, split, subset, resolved)
    if held_out_split and _has_split(source, held_out_split):
        held = _examples(source, held_out_split, subset, resolved)
    else:  # carve the held-out rows out of the training split, by prompt so duplicates follow
        held = [ex for ex in train if prompt_bucket(ex.prompt) < held_out_fraction]
        train = [ex for ex in train if prompt_bucket(ex.prompt) >= held_out_fraction]
    label = f"dataset {source if isinstance(source, str) else source.get(split)}"
    return DatasetSource(train, held, seed=seed, difficulty=difficulty, label=label)


def _has_split(source: str | dict[str, str], split: str) -> bool:
    if isinstance(source, dict):
        return split in source
    return not Path(source).exists()  # a hub dataset: trust the preset's split name


@register_task("dataset")
def _dataset_task(seed: int = 0, difficulty: int | list[int] | None = None, *, source: str | dict[str, str],
                  **options) -> DatasetSource:
    """`make_task("dataset", seed, difficulty, source=..., preset=..., mapping={...}, split=...)`."""
    return load_dataset_task(source, seed=seed, difficulty=difficulty, **options)
