"""M2DinoTrainingArguments carries the sampler and evaluation settings, and m2dino-train parses its flags into it."""

import dataclasses

import pytest
from transformers import TrainingArguments

from m2dino_training import train
from m2dino_training.training_args import M2DinoTrainingArguments


def test_is_a_training_arguments_dataclass_and_refuses_unknown_settings(tmp_path):
    args = M2DinoTrainingArguments(str(tmp_path), sampler="mixed", task_weighting="uniform", temperature=3.0,
                                   use_cpu=True, report_to="none")
    assert isinstance(args, TrainingArguments) and dataclasses.is_dataclass(args)
    assert (args.sampler, args.task_weighting, args.temperature, args.distance_metrics) == ("mixed", "uniform", 3.0, True)
    assert '"sampler": "mixed"' in args.to_json_string()  # saved beside the model with the other arguments
    with pytest.raises(ValueError, match="unknown sampler 'random'; valid: homogeneous, mixed"):
        M2DinoTrainingArguments(str(tmp_path), sampler="random")
    with pytest.raises(ValueError, match="unknown task_weighting 'square'; valid: uniform, proportional, temperature"):
        M2DinoTrainingArguments(str(tmp_path), task_weighting="square")


def test_train_command_parses_its_flags_into_the_training_arguments(tmp_path):
    run, training = train.parse_arguments(["--output_dir", str(tmp_path)])
    assert isinstance(training, M2DinoTrainingArguments)
    assert (training.sampler, training.task_weighting, training.temperature) == ("mixed", "temperature", 2.0)
    run, training = train.parse_arguments(["--output_dir", str(tmp_path), "--sampler", "homogeneous",
                                           "--task_weighting", "uniform", "--temperature", "3"])
    assert (training.sampler, training.task_weighting, training.temperature) == ("homogeneous", "uniform", 3.0)
    assert training.distance_metrics is True
    run, training = train.parse_arguments(["--output_dir", str(tmp_path), "--distance_metrics", "false"])
    assert training.distance_metrics is False
    assert not hasattr(run, "sampler")  # the settings live on the training arguments alone
