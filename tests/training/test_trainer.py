"""MultiTaskTrainer reads the sampler and evaluation settings from its `M2DinoTrainingArguments` (plain `TrainingArguments` are converted)."""

import pytest
from conftest import tiny_config
from transformers import TrainingArguments

import modeling_m2dino as m2dino
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


def test_trainer_reads_the_sampler_settings_from_args(tmp_path, monkeypatch):
    args = M2DinoTrainingArguments(str(tmp_path), sampler="mixed", task_weighting="proportional", temperature=4.0,
                                   per_device_train_batch_size=2, seed=7, use_cpu=True, report_to="none")
    trainer = MultiTaskTrainer(model=m2dino.M2DinoForMultiTask(tiny_config()), args=args)
    assert trainer.args is args
    assert _sampler_settings(trainer, monkeypatch) == {
        "mode": "mixed", "task_weighting": "proportional", "temperature": 4.0, "seed": 7, "batch_size": 2,
        "tasks": _TaskedDataset.tasks,
    }


def test_trainer_reads_the_evaluation_setting_from_args(tmp_path, monkeypatch):
    recorded = []
    monkeypatch.setattr("m2dino_training.trainer.evaluate_model",
                        lambda *args, distances, **kwargs: recorded.append(distances) or {"tasks": {}, "score": 0.0})
    monkeypatch.setattr("m2dino_training.trainer.flat_metrics", lambda results, prefix: {f"{prefix}_score": 0.0})
    model = m2dino.M2DinoForMultiTask(tiny_config())
    for distance_metrics in (False, True):
        args = M2DinoTrainingArguments(str(tmp_path), distance_metrics=distance_metrics, use_cpu=True, report_to="none")
        MultiTaskTrainer(model=model, args=args, eval_sets={"IUGC": []}).evaluate()
    assert recorded == [False, True]


def test_trainer_takes_its_settings_from_m2dino_training_arguments_and_converts_plain_ones(tmp_path, monkeypatch):
    model = m2dino.M2DinoForMultiTask(tiny_config())
    # a script written for the Trainer passes plain TrainingArguments: every field is kept, the settings default
    plain = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none", max_steps=7, learning_rate=3e-4,
                              lr_scheduler_type="cosine", logging_steps=3)
    converted = MultiTaskTrainer(model=model, args=plain).args
    assert isinstance(converted, M2DinoTrainingArguments)
    assert {name: getattr(converted, name) for name in plain.to_dict()} == {
        name: getattr(plain, name) for name in plain.to_dict()}
    assert converted.sampler == "homogeneous" and converted.distance_metrics is True
    args = M2DinoTrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(TypeError, match="sampler_mode"):  # the settings are arguments fields, not trainer keywords
        MultiTaskTrainer(model=model, args=args, sampler_mode="mixed")
    monkeypatch.chdir(tmp_path)
    defaults = MultiTaskTrainer(model=model).args
    assert isinstance(defaults, M2DinoTrainingArguments)
    assert (defaults.sampler, defaults.task_weighting, defaults.temperature, defaults.distance_metrics) == (
        "homogeneous", "temperature", 2.0, True)
