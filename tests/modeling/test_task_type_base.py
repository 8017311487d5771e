"""The task-type base: what every type's label stacking shares."""

import pytest
import torch

from modeling_m2dino.tasks import EXTRA_TASKS, FMC_UIA_TASKS
from modeling_m2dino.task_types import TASK_TYPES

# (type of the registry, key its per-sample labels carry, a valid entry)
KEYED_LABELS = [("classification", "class_labels", 1), ("segmentation", "mask", torch.zeros(4, 4, dtype=torch.long)),
                ("regression", "points", [[1.0, 2.0]] * 3), ("measurement", "values", [180.0])]


@pytest.mark.parametrize("name, key, entry", KEYED_LABELS, ids=[k[0] for k in KEYED_LABELS])
def test_a_label_without_its_key_is_named_with_the_task_and_the_keys_it_has(name, key, entry):
    task = next(t for t in FMC_UIA_TASKS + EXTRA_TASKS if t.type == name and (name != "regression" or t.num_points == 3))
    kind = TASK_TYPES[name]
    assert kind.label_entries([{key: entry}, {key: entry}], key, task) == [entry, entry]
    assert len(kind.stack_labels([{key: entry}], task, (4, 4))) == 1
    with pytest.raises(ValueError, match=rf"task '{task.id}' \({name}\): each label needs '{key}', got keys \['other'\]"):
        kind.stack_labels([{key: entry}, {"other": entry}], task, (4, 4))
