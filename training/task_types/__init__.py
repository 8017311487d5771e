"""The training side of the task types: one module per type in this package, each holding a `TrainingTaskType`
subclass, found and registered when the package is imported. Adding a type is adding its module here and its
model side (`modeling_m2dino/<type>.py`); every table and branch on task types in `m2dino_training` reads them
through `training_task_type`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

from .base import TrainingTaskType


class TrainingTaskTypeRegistry(Mapping):
    """Type name -> `TrainingTaskType` subclass, in the model side's order of types."""

    def __init__(self):
        self._types: dict[str, type[TrainingTaskType]] = {}

    def register(self, task_type: type[TrainingTaskType]):
        self._types[task_type.name()] = task_type

    def __getitem__(self, name) -> type[TrainingTaskType]:
        if name not in self._types:
            raise KeyError(f"unknown task type {name!r}; known types: {', '.join(self)}")
        return self._types[name]

    def __iter__(self):
        return iter(sorted(self._types, key=lambda name: (self._types[name].model_type.order, name)))

    def __len__(self) -> int:
        return len(self._types)


TRAINING_TASK_TYPES = TrainingTaskTypeRegistry()


def training_task_type(task) -> type[TrainingTaskType]:
    """The `TrainingTaskType` of a `TaskSpec`, a task dict or a type name; ValueError for an unknown type."""
    name = task if isinstance(task, str) else task.get("type") if isinstance(task, Mapping) else task.type
    try:
        return TRAINING_TASK_TYPES[name]
    except KeyError as error:
        raise ValueError(error.args[0]) from None


def fit_heads(model, tasks, train_examples: dict):
    """Sets what each new head of `model` keeps of its task's training labels (`TrainingTaskType.fit_head`, e.g. a
    measurement's mean and standard deviation), from `train_examples` (task id -> example dicts), before training."""
    for task in tasks:
        training_task_type(task).fit_head(model.heads[task.id], task, train_examples.get(task.id, []))


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TRAINING_TASK_TYPES", "TrainingTaskType", "TrainingTaskTypeRegistry", "fit_heads", "training_task_type"]
