"""Problem sources: seeded generators with difficulty levels, dataset loaders, prompt templates.

`make_task(name, seed=0, difficulty=1, **options)` builds any of them by name:
arithmetic, linear_equation, word_problems, countdown, python_functions, mixed, dataset.
"""
from rlvr.tasks.base import Example, TaskSource
from rlvr.tasks.registry import available_tasks, make_task, register_task

# Importing the modules registers their sources.
from rlvr.tasks.arithmetic import ArithmeticSource
from rlvr.tasks.linear_equation import LinearEquationSource
from rlvr.tasks.word_problems import WordProblemsSource
from rlvr.tasks.countdown import CountdownSource
from rlvr.tasks.python_functions import PythonFunctionsSource
from rlvr.tasks.mixed import MixedSource
from rlvr.tasks.dataset_source import DatasetRowError, DatasetSource, FieldMapping, load_dataset_task
from rlvr.tasks.templates import R1_INSTRUCTION, available_templates, render_prompt

__all__ = [
    "Example", "TaskSource", "make_task", "register_task", "available_tasks",
    "ArithmeticSource", "LinearEquationSource", "WordProblemsSource", "CountdownSource", "PythonFunctionsSource", "MixedSource",
    "DatasetSource", "DatasetRowError", "FieldMapping", "load_dataset_task",
    "render_prompt", "available_templates", "R1_INSTRUCTION",
]
