"""The task-type abstraction of the model side: `TaskType`, the base of one class per type, and `TASK_TYPES`, the
registry that finds them (import it from `task_types.py`, which also loads the challenge's types).

A task type named `x` is the module `x.py` of this package, holding a `TaskType` subclass with `name = "x"`: its head,
output class, loss, label checks, per-sample layout and post-processing to original pixels. The registry imports
that module the first time the name is asked for, so adding a type is adding its module (and the training side's
counterpart, `m2dino_training.task_types`); nothing else names it. (transformers' copy of a saved folder's code for
`trust_remote_code` holds only the modules imported by name: the folder's copy of `task_types.py` imports every
registered type module, see `remote_code.py`.)
"""

import importlib
import os
from collections.abc import Mapping

import torch

# The padding index of the fixed per-sample layouts: the Trainer's own, so that its padding and ours read the same.
PADDING_VALUE = -100


def has_values_outside(values: torch.Tensor, low: float, high: float) -> bool:
    """Whether any of `values` is not finite or lies outside [low, high], in one read back from the device (a label
    or task-id check that branches on values costs a host sync; one per check, not one per condition)."""
    return bool((~torch.isfinite(values) | (values < low) | (values > high)).any())



class TaskType:
    """Everything that is specific to one task type on the model side. Subclasses set the class attributes and
    implement the static methods; instances are never made.

    Attributes:
        name: the type's name, as `TaskSpec.type` spells it; also the name of its module.
        order: position of the type in listings (tables, figures), lowest first.
        csv_name: how the challenge CSVs spell the type in their `task_name` column.
        count_field: the `TaskSpec` field that counts the head's outputs (`num_classes`, `num_points`), or None
            when the count is the number of `labels` (one named output each).
        min_count: the smallest count a task of this type may have.
        head_class, output_class: the head module (built as `head_class(config, task)`) and its ModelOutput.
        output_fields: the names, in the output class, of the head's leading return values (in order); a head may
            return more after them, which only its `loss` reads.
        label_keys: the keys of this type's labels in the fixed per-sample layout (`per_sample.py`).
        slot_dimensions: head output field -> (dimension that counts outputs, count for a task); other fields have
            the same shape for every task of the type.
    """

    name: str = ""
    order: int = 100
    csv_name: str = ""
    count_field: str | None = "num_classes"
    min_count: int = 1
    head_class = None
    output_class = None
    output_fields: tuple[str, ...] = ()
    label_keys: tuple[str, ...] = ()
    slot_dimensions: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            TASK_TYPES.register(cls)

    # ---- the task record -------------------------------------------------------------------------------------

    @classmethod
    def count(cls, task) -> int:
        """How many outputs a task's head has (classes, points or values)."""
        return len(task.labels) if cls.count_field is None else getattr(task, cls.count_field)

    @classmethod
    def check_spec(cls, task):
        """Validates a `TaskSpec` of this type; clears the count fields the type does not use."""
        for other in ("num_classes", "num_points"):
            if other != cls.count_field:
                setattr(task, other, None)
        if cls.count_field is None:
            if len(task.labels) < cls.min_count:
                raise ValueError(f"task {task.id!r}: a {cls.name} task needs at least {cls.min_count} named labels")
            return
        count = getattr(task, cls.count_field)
        if not isinstance(count, int) or count < cls.min_count:
            raise ValueError(f"task {task.id!r}: a {cls.name} task needs {cls.count_field} >= {cls.min_count}, got {count!r}")

    @classmethod
    def default_labels(cls, count: int) -> list[str]:
        return [f"class_{i}" for i in range(count)]

    # ---- the model -------------------------------------------------------------------------------------------

    @staticmethod
    def init_head(head, config):
        """Initialises what `_init_weights`' defaults (linear, convolution and norm layers) do not cover."""

    @staticmethod
    def output_shapes(config, task, image_size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each head output field for this image size."""
        raise NotImplementedError

    @staticmethod
    def stack_labels(samples: list[dict], task, image_size: tuple[int, int]):
        """Per-sample label dicts -> the batched labels `check_labels` and `loss` take."""
        raise NotImplementedError

    @classmethod
    def label_entries(cls, samples: list[dict], key: str, task) -> list:
        """The `key` entry of every per-sample label dict (for `stack_labels`), naming the task and the keys a label
        has when one lacks it."""
        for sample in samples:
            if key not in sample:
                raise ValueError(f"task {task.id!r} ({cls.name}): each label needs {key!r}, got keys {sorted(sample)}")
        return [sample[key] for sample in samples]

    @staticmethod
    def check_labels(labels, task, batch_size: int, image_size: tuple[int, int]):
        raise NotImplementedError

    @staticmethod
    def loss(outputs, labels, task) -> torch.Tensor:
        raise NotImplementedError

    # ---- data in and out -------------------------------------------------------------------------------------

    @staticmethod
    def encode(processor, example: dict) -> tuple[torch.Tensor, dict]:
        """A data example (original pixels) -> processed pixel values and the model's per-sample label."""
        raise NotImplementedError

    @staticmethod
    def reference(example: dict):
        """The ground truth of an example in original pixels, the form the metrics take."""
        raise NotImplementedError

    @classmethod
    def decode(cls, output, target_sizes) -> list:
        """Head output -> per-image predictions in original pixels, the form the metrics take."""
        raise NotImplementedError

    # ---- the fixed per-sample layout (per_sample.py) ---------------------------------------------------------

    @classmethod
    def empty_labels(cls, batch_size: int, tasks: list, labels: list[dict], image_size: tuple[int, int]) -> dict:
        """`label_keys` -> tensors full of padding, sized for `tasks` (this model's tasks of this type)."""
        raise NotImplementedError

    @staticmethod
    def fill_labels(out: dict, row: int, label: dict, task, image_size: tuple[int, int]):
        """Writes one sample's label (its per-sample form) into row `row` of the layout."""
        raise NotImplementedError

    @staticmethod
    def sample_labels(labels: Mapping, row: int, task) -> dict:
        """Row `row` of the layout -> that sample's per-sample label."""
        raise NotImplementedError


class TaskTypeRegistry(Mapping):
    """Type name -> `TaskType` subclass. Asking for a name not yet registered imports the module of that name from
    this package, which registers its type; iterating lists the known types in their `order`."""

    def __init__(self):
        self._types: dict[str, type[TaskType]] = {}

    def register(self, task_type: type[TaskType]):
        self._types[task_type.name] = task_type

    def _load(self, name) -> bool:
        if name in self._types:
            return True
        if not isinstance(name, str) or not name.isidentifier():
            return False
        package_dir = os.path.dirname(os.path.abspath(__file__))
        if not os.path.isfile(os.path.join(package_dir, f"{name}.py")):
            return False
        importlib.import_module(f"{__package__}.{name}")
        return name in self._types

    def __getitem__(self, name) -> type[TaskType]:
        if not self._load(name):
            raise KeyError(f"unknown task type {name!r}; known types: {', '.join(self)}")
        return self._types[name]

    def __contains__(self, name) -> bool:
        return self._load(name)

    def __iter__(self):
        return iter(sorted(self._types, key=lambda name: (self._types[name].order, name)))

    def __len__(self) -> int:
        return len(list(iter(self)))


TASK_TYPES = TaskTypeRegistry()


__all__ = ["PADDING_VALUE", "TASK_TYPES", "TaskType", "TaskTypeRegistry", "has_values_outside"]
