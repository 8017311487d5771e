"""`M2DinoTrainingArguments`: `TrainingArguments` with the settings of multi-task batching and evaluation."""

import copy
from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from .data.samplers import MODES, WEIGHTINGS


@dataclass
class M2DinoTrainingArguments(TrainingArguments):
    """The `TrainingArguments` of a `MultiTaskTrainer`: every field of transformers' class, plus how batches
    are drawn from the tasks (`data/samplers.py`) and what evaluation measures. `m2dino-train` parses its
    flags into it (`--sampler`, `--task_weighting`, `--temperature`)."""

    sampler: str = field(
        default="homogeneous",
        metadata={"help": "mixed (every head learns every step) or homogeneous (one task per batch)"},
    )
    task_weighting: str = field(default="temperature", metadata={"help": "uniform, proportional or temperature"})
    temperature: float = field(
        default=2.0, metadata={"help": "task probability ~ n_task^(1/T) with temperature weighting"}
    )
    distance_metrics: bool = field(
        default=True,
        metadata={
            "help": "evaluate the segmentation surface distances (HD, HD95) too; runs that evaluate often and "
            "select on the primary metrics leave them out"
        },
    )

    def __post_init__(self):
        check_multitask_settings(self)
        super().__post_init__()


def check_multitask_settings(args) -> None:
    """Refuse a sampler or a task weighting that `TaskBatchSampler` does not know, naming the argument."""
    for name, valid in (("sampler", MODES), ("task_weighting", WEIGHTINGS)):
        value = getattr(args, name)
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


MULTITASK_FIELDS = {f.name: f.default for f in fields(M2DinoTrainingArguments) if f.name not in
                    {f.name for f in fields(TrainingArguments)}}  # fmt: skip


def with_multitask_settings(args: TrainingArguments, settings: dict) -> TrainingArguments:
    """`args` (any `TrainingArguments`) with the multi-task settings: those in `settings`, else the ones `args`
    holds, else `M2DinoTrainingArguments`' defaults. A shallow copy: the caller's object stays as it is."""
    extended = copy.copy(args)
    for name, default in MULTITASK_FIELDS.items():
        setattr(extended, name, settings.get(name, getattr(args, name, default)))
    check_multitask_settings(extended)
    return extended
