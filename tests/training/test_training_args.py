"""M2DinoTrainingArguments carries the sampler and evaluation settings; MultiTaskTrainer reads them from `args`."""

import dataclasses

import pytest
from conftest import tiny_config
from transformers import TrainingArguments

import modeling_m2dino as m2dino
from m2dino_training import train
from m2dino_training.trainer import MultiTaskTrainer
from m2dino_training.training_args import M2DinoTrainingArguments


class _Recorded(Exception):
    pass


class _TaskedDataset:
    tasks = ["IUGC", "breast_3cls", "breast_3cls"]

    def __len__(self):
        return len(self.tasks)


def _sampler_settings(trainer, monkeypatch) -> dict:
    """The settings `get_train_dataloader` gives the task batch sampler."""
    recorded = {}

    def record(task_of_index, batch_size, **settings):
        recorded.update(settings, tasks=list(task_of_index), batch_size=batch_size)
        raise _Recorded

    monkeypatch.setattr("m2dino_training.trainer.TaskBatchSampler", record)
    trainer.train_dataset = _TaskedDataset()
    with pytest.raises(_Recorded):
        trainer.get_train_dataloader()
    return recorded


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
    # code that read them from the run arguments before they moved still finds them there
    assert (run.sampler, run.task_weighting, run.temperature) == ("homogeneous", "uniform", 3.0)


def test_trainer_reads_the_sampler_settings_from_args(tmp_path, monkeypatch):
    args = M2DinoTrainingArguments(str(tmp_path), sampler="mixed", task_weighting="proportional", temperature=4.0,
                                   per_device_train_batch_size=2, seed=7, use_cpu=True, report_to="none")
    trainer = MultiTaskTrainer(model=m2dino.M2DinoForMultiTask(tiny_config()), args=args)
    assert trainer.args is args
    assert _sampler_settings(trainer, monkeypatch) == {
        "mode": "mixed", "task_weighting": "proportional", "temperature": 4.0, "seed": 7, "batch_size": 2,
        "tasks": _TaskedDataset.tasks,
    }


def test_plain_training_arguments_and_the_earlier_keywords(tmp_path, monkeypatch):
    plain = TrainingArguments(str(tmp_path), per_device_train_batch_size=2, use_cpu=True, report_to="none")
    model = m2dino.M2DinoForMultiTask(tiny_config())
    defaults = _sampler_settings(MultiTaskTrainer(model=model, args=plain), monkeypatch)
    assert (defaults["mode"], defaults["task_weighting"], defaults["temperature"]) == ("homogeneous", "temperature", 2.0)
    trainer = MultiTaskTrainer(model=model, args=plain, sampler_mode="mixed", task_weighting="uniform", temperature=5.0,
                               distance_metrics=False)
    given = _sampler_settings(trainer, monkeypatch)
    assert (given["mode"], given["task_weighting"], given["temperature"]) == ("mixed", "uniform", 5.0)
    assert trainer.args.distance_metrics is False
    assert not hasattr(plain, "sampler")  # the caller's arguments are left as they were
    with pytest.raises(ValueError, match="unknown sampler 'random'"):
        MultiTaskTrainer(model=model, args=plain, sampler_mode="random")
