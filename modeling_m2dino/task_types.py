"""The task types of the model side: the registry `TASK_TYPES` (type name -> `TaskType`) with the challenge's four
types loaded. The abstraction itself is in `task_type_base.py`; one module per type (`segmentation.py`,
`classification.py`, `detection.py`, `regression.py`, ...) holds each type's head, loss, label checks, per-sample
layout and post-processing. A type named `x` is the module `x.py`, found by the registry when first named.
"""

from .task_type_base import PADDING_VALUE, TASK_TYPES, TaskType, TaskTypeRegistry, has_values_outside

# The challenge's types, loaded with the package (a saved folder's copy of this module imports every type by name).
from .classification import ClassificationType  # noqa: F401
from .detection import DetectionType  # noqa: F401
from .regression import RegressionType  # noqa: F401
from .segmentation import SegmentationType  # noqa: F401


def task_type_of(task) -> type[TaskType]:
    """The `TaskType` of a `TaskSpec` (or of a type name)."""
    return TASK_TYPES[task if isinstance(task, str) else task.type]


__all__ = ["PADDING_VALUE", "TASK_TYPES", "TaskType", "TaskTypeRegistry", "has_values_outside", "task_type_of"]
