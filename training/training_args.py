"""`M2DinoTrainingArguments`: `TrainingArguments` with the settings of multi-task batching and evaluation."""

from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from .data.samplers import MODES, WEIGHTINGS


@dataclass
class M2DinoTrainingArguments(TrainingArguments):
    """The `TrainingArguments` of a `MultiTaskTrainer`: every field of transformers' class, plus how batches
    are drawn from the tasks (`data/samplers.py`) and what evaluation measures. `m2dino-train` parses its
    flags into it (`--sampler`, `--task_weighting`, `--temperature`, `--distance_metrics`)."""

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
        # a sampler or task weighting that `TaskBatchSampler` does not know is refused here, naming the argument
        for name, valid in (("sampler", MODES), ("task_weighting", WEIGHTINGS)):
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        super().__post_init__()

    @classmethod
    def from_training_arguments(cls, args: TrainingArguments) -> "M2DinoTrainingArguments":
        """A plain `TrainingArguments` (from a script written for the Trainer) with every field kept and the
        multi-task settings at their defaults."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(args) if f.init})
