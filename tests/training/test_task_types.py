"""The training-side task-type registry: what callers may rely on without knowing the types."""

from m2dino_training.task_types import TRAINING_TASK_TYPES, TrainingTaskType


def test_a_type_says_it_fits_its_heads_exactly_when_it_reads_training_examples_to_do_so():
    # callers decode training examples for `fit_head` only where `fits_head` is set (the advisor's probe)
    for name, kind in TRAINING_TASK_TYPES.items():
        assert kind.fits_head == (kind.fit_head is not TrainingTaskType.fit_head), name
