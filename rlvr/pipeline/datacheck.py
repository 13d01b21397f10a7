"""Open every local dataset file a recipe names and check each row before any work starts.

A bad file would otherwise fail deep inside `datasets` (a bare StopIteration for an empty file, a
pyarrow traceback for a line that is not JSON) or only when a stage draws the bad row. Each file
gets its row count, or a `ConfigError` naming the file and the first bad row by its number.
JSON Lines, JSON and CSV files are read here row by row; other formats are left to the loader.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from rlvr.config import ConfigError

READ_HERE = (".jsonl", ".json", ".csv")


def check_local_datasets(recipe) -> list[str]:
    """One line per local dataset file of `recipe` ("FILE: N rows"); raises on the first bad file."""
    task = recipe.task
    if task.name != "dataset":
        return []
    from rlvr.tasks.dataset_source import DatasetRowError, resolve_mapping, row_to_example

    options = task.options
    try:
        mapping, _ = resolve_mapping(options.get("mapping"), options.get("preset"))
    except ValueError as e:
        raise ConfigError(f"task.options.mapping: {e}") from e
    source = options.get("source")
    files = source.items() if isinstance(source, dict) else [(options.get("split", "train"), source)]
    report = []
    for split, name in files:
        path = Path(str(name)).expanduser()
        if not isinstance(name, str) or not path.is_file() or path.suffix.lower() not in READ_HERE:
            continue  # a hub dataset, or a format (parquet) only the loader reads
        rows = list(_rows(path))
        if not rows:
            raise ConfigError(f"{path}: the dataset file is empty (no rows)")
        for number, row in rows:
            if isinstance(row, Exception):
                raise ConfigError(f"{path}: row {number} is not a JSON object ({row})")
            try:
                row_to_example(row, number, mapping, str(path), split)
            except DatasetRowError as e:
                raise ConfigError(str(e)) from e
        report.append(f"{path}: {len(rows)} rows, each with {mapping.prompt!r} and {mapping.answer!r}")
    return report


def _rows(path: Path):
    """(row number from 1, row dict or the error reading it) for every non-blank row; in a JSON
    Lines file without blank lines the row number is the line number."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="") as f:
            yield from enumerate(csv.DictReader(f), start=1)
        return
    text = path.read_text()
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            yield 1, e
            return
        yield from ((i, r if isinstance(r, dict) else ValueError(f"got {type(r).__name__}"))
                    for i, r in enumerate(data, start=1))
        return
    number = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        number += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, ValueError(f"{e.msg} at column {e.colno}")
            continue
        yield number, row if isinstance(row, dict) else ValueError(f"got {type(row).__name__}")
