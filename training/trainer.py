"""`MultiTaskTrainer`: the HF Trainer for M2DINO's multi-task batches.

What it adds to `transformers.Trainer`:
- a task-aware batch sampler (task-homogeneous or mixed batches, task weighting by a temperature) whose
  batches carry their epoch, so augmentation is a function of (seed, epoch, index) and a resumed run is exact;
  the sampler draws *global* batches that accelerate splits across processes (`split_batches=True`);
- per-task losses and the router loss in the logs, beside the total;
- a training stop that names the task and the step when a loss is NaN or infinite;
- evaluation with the challenge metrics on held-out examples (`eval_<task>_<metric>`, and `eval_score`,
  the mean normalised primary metric used to pick the best checkpoint);
- checkpoints written into a staging folder and renamed into place, so a killed run never leaves a
  half-written `checkpoint-N` that a resume would pick up;
- a resume from a checkpoint of other tasks refused before any weight is loaded (the Trainer would load
  the router rows and heads of other tasks, or crash inside torch when the counts agree). Optimizer,
  scheduler and RNG state are read by the Trainer with ``torch.load(..., weights_only=True)``.
"""

import json
import os
import shutil
import stat

import torch
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, seed_worker
from transformers.utils import logging

from .data.collate import EpochTaggedBatchSampler, collate
from .data.samplers import TaskBatchSampler
from .evaluate import evaluate_model, flat_metrics
from .output_folder import file_mode_for, match_permissions
from .training_args import M2DinoTrainingArguments

logger = logging.get_logger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


def _task_identity(task: dict) -> tuple:
    return task["id"], task["type"], task.get("num_classes"), task.get("num_points")


def check_resume_tasks(checkpoint: str, tasks: list[dict]):
    """Refuse a checkpoint trained for other tasks than `tasks` (task dicts in model order), naming them.

    Router rows are stored by task position and heads by task id, so the ids, their order, their types and
    their class or point counts must all agree.
    """
    config_file = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"cannot resume from {checkpoint}: it holds no config.json (not a checkpoint of an M2DINO run)")
    with open(config_file, encoding="utf-8") as f:
        saved = json.load(f).get("tasks") or []
    saved_ids, run_ids = [t["id"] for t in saved], [t["id"] for t in tasks]
    if [_task_identity(t) for t in saved] == [_task_identity(t) for t in tasks]:
        return
    problems = []
    if set(saved_ids) - set(run_ids):
        problems.append(f"tasks only in the checkpoint: {sorted(set(saved_ids) - set(run_ids))}")
    if set(run_ids) - set(saved_ids):
        problems.append(f"tasks only in this run: {sorted(set(run_ids) - set(saved_ids))}")
    changed = sorted(t["id"] for t in tasks for s in saved if s["id"] == t["id"] and _task_identity(s) != _task_identity(t))
    if changed:
        problems.append(f"tasks of another type or label count: {changed}")
    if not problems:
        problems.append("the same tasks in another order")
    raise ValueError(
        f"cannot resume from {checkpoint}: it was trained for tasks {saved_ids}, this run trains {run_ids} "
        f"({'; '.join(problems)}). Resume with the checkpoint's tasks (--tasks, --paradigm), or start a new run"
    )


class MultiTaskTrainer(Trainer):
    """The Trainer over a multi-task dataset: task-batched sampling, per-task losses in the logs, and
    `evaluate` in the challenge's metrics on `eval_sets` (task id -> held-out examples), against the trivial
    baseline of `baseline_sets`.

    The sampler, the task weighting and whether evaluations measure the segmentation surface distances are
    read from `args`, an `M2DinoTrainingArguments` (a plain `TrainingArguments` is converted, with those
    settings at their defaults, logged)."""

    def __init__(self, model=None, args: M2DinoTrainingArguments | None = None, *, processor=None, eval_sets=None,
                 baseline_sets=None, **kwargs):
        if args is None:
            args = M2DinoTrainingArguments(output_dir="tmp_trainer")  # as the Trainer does without args
        if not isinstance(args, M2DinoTrainingArguments):
            # a script written for the Trainer passes plain TrainingArguments: keep them, say which settings default
            args = M2DinoTrainingArguments.from_training_arguments(args)
            logger.info("MultiTaskTrainer: plain TrainingArguments given; sampler=%s, task_weighting=%s, "
                        "temperature=%s, distance_metrics=%s (M2DinoTrainingArguments' defaults)", args.sampler,
                        args.task_weighting, args.temperature, args.distance_metrics)
        kwargs.setdefault("data_collator", collate)
        super().__init__(model, args, **kwargs)
        self.processor = processor
        self.eval_sets = eval_sets or {}
        self.baseline_sets = baseline_sets
        self.last_eval_results = None
        self._loss_sums: dict[str, float] = {}
        self._loss_counts: dict[str, int] = {}

    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        global_batch = self.args.per_device_train_batch_size * max(1, self.args.world_size)
        sampler = TaskBatchSampler(dataset.tasks, global_batch, mode=self.args.sampler,
                                   task_weighting=self.args.task_weighting, temperature=self.args.temperature,
                                   seed=self.args.data_seed or self.args.seed)
        loader = DataLoader(
            dataset,
            batch_sampler=EpochTaggedBatchSampler(sampler),
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            worker_init_fn=lambda worker: seed_worker(worker, self.args.dataloader_num_workers, self.args.process_index),
        )
        return self.accelerator.prepare(loader)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        if resume_from_checkpoint:
            checkpoint = resume_from_checkpoint
            if checkpoint is True:
                checkpoint = get_last_checkpoint(self.args.output_dir)
            tasks = getattr(getattr(self.accelerator.unwrap_model(self.model), "config", None), "tasks", None)
            if checkpoint and tasks is not None:  # before the Trainer loads any weight from it
                check_resume_tasks(checkpoint, tasks)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                             ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        losses = {f"loss_{task}": value for task, value in (outputs.task_losses or {}).items()}
        if outputs.aux_loss is not None:
            losses["router_loss"] = outputs.aux_loss
        for name, value in list(losses.items()) + [("loss", outputs.loss)]:
            if not torch.isfinite(value):
                raise NonFiniteLossError(
                    f"{name} is {value.item()} at step {self.state.global_step + 1} (tasks in the batch: "
                    f"{sorted(set(inputs['tasks']))}); training stopped, the last checkpoint is intact"
                )
        for name, value in losses.items():
            self._loss_sums[name] = self._loss_sums.get(name, 0.0) + value.detach().item()
            self._loss_counts[name] = self._loss_counts.get(name, 0) + 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the per-task and router losses since the last one
            for name, total in self._loss_sums.items():
                logs[name] = round(total / self._loss_counts[name], 6)
            self._loss_sums, self._loss_counts = {}, {}
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Challenge metrics of every task on the held-out examples given at construction."""
        if not self.eval_sets:
            raise ValueError("MultiTaskTrainer.evaluate needs eval_sets (task id -> held-out examples)")
        model = self.accelerator.unwrap_model(self.model)
        self.last_eval_results = evaluate_model(model, self.processor, self.eval_sets, self.baseline_sets,
                                                batch_size=self.args.per_device_eval_batch_size, seed=self.args.seed,
                                                distances=self.args.distance_metrics)
        metrics = flat_metrics(self.last_eval_results, metric_key_prefix)
        if self.state.epoch is not None:
            metrics[f"{metric_key_prefix}_epoch"] = self.state.epoch
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint, written under `.staging/` and then renamed into place (atomic on POSIX)."""
        run_dir = self._get_output_dir(trial=trial)
        staging_root = os.path.join(run_dir, ".staging")
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        original_output_dir = self._get_output_dir
        self._get_output_dir = lambda trial=None: staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._get_output_dir = original_output_dir
        if self.args.should_save:
            final = os.path.join(run_dir, name)
            if os.path.exists(final):
                shutil.rmtree(final)
            if self.state.best_model_checkpoint and self.state.best_model_checkpoint.startswith(staging_root):
                self.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(self.state.best_model_checkpoint))
                self.state.save_to_json(os.path.join(staging_root, name, "trainer_state.json"))
            staged = os.path.join(staging_root, name)
            # the saved files get the folder's permissions (the weights are written 0600 otherwise)
            match_permissions(staged, file_mode_for(run_dir), stat.S_IMODE(os.stat(run_dir).st_mode))
            os.replace(staged, final)
            shutil.rmtree(staging_root, ignore_errors=True)
            self._rotate_checkpoints_in(run_dir)

    def _rotate_checkpoints_in(self, run_dir: str):
        limit = self.args.save_total_limit
        if not limit:
            return
        checkpoints = sorted(
            (d for d in os.listdir(run_dir) if d.startswith(f"{PREFIX_CHECKPOINT_DIR}-")), key=lambda d: int(d.split("-")[-1])
        )
        keep = set(checkpoints[-limit:])
        if self.state.best_model_checkpoint:
            keep.add(os.path.basename(self.state.best_model_checkpoint))
        for stale in checkpoints:
            if stale not in keep:
                shutil.rmtree(os.path.join(run_dir, stale), ignore_errors=True)
