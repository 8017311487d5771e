"""`m2dino-train`: multi-task training of M2DINO on the HF Trainer, in the paper's three paradigms.

    m2dino-train --paradigm au --data synthetic --preset tiny --output_dir m2dino --max_steps 600

`--paradigm ts` trains one model per task, `cg` one per clinical group, `au` one for all tasks. A run that
trains one model saves it into `--output_dir`; several go to `<output_dir>/<paradigm>_<task or group>/`.
Every `TrainingArguments` flag works (either spelling, `--max_steps` or `--max-steps`). Each saved folder gets
the model, its image processor, `eval_results.json` (challenge metrics per task against trivial baselines on
held-out data) and a model card.

One run at a time uses an output folder (a lock file in it names the owner). The final save replaces a model
already there in one atomic step (see `output_folder.py`): a run killed at any moment leaves the old model or
the new one, each complete. `--overwrite` removes the old run's checkpoints only once the new model is in.
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, set_seed

from modeling_m2dino import EXTRA_TASKS, FMC_UIA_TASKS, M2DinoConfig, M2DinoForMultiTask, M2DinoImageProcessor, clinical_groups

from .data.augment import Augmenter, AugmentConfig
from .cli import argument_errors_exit
from .data import sources as data_sources
from .data.collate import ProcessedExamples, task_list
from .data.sources import TaskSubset  # the study and the advisor import it from here too
from .evaluate import MAX_BASELINE_EXAMPLES, examples_by_task, results_table
from .output_folder import (
    OutputFolderBusyError,
    OutputFolderLock,
    carry_over,
    publish_model_folder,
    remove_abandoned_staging,
    set_aside_previous_checkpoints,
    staged_model_folder,
)
from .task_types import fit_heads
from .trainer import MultiTaskTrainer, check_resume_tasks
from .training_args import M2DinoTrainingArguments

logger = logging.getLogger(__name__)

PARADIGMS = {"ts": "task-specific", "cg": "clinically-grouped", "au": "all-task unified"}
ON_ERROR = ("raise", "skip")


@dataclass
class M2DinoRunArguments:
    paradigm: str = field(default="au", metadata={"help": "ts (one model per task), cg (per clinical group), au (one model)"})
    tasks: list[str] | None = field(default=None, metadata={"help": "task ids (default: every task present in the data)"})
    groups: str | None = field(default=None, metadata={"help": "JSON file mapping group names to task ids (default: the clinical groups of the task registry)"})
    data: str = field(default="synthetic", metadata={"help": "'synthetic', a challenge-layout folder or a datasets folder"})
    preset: str = field(default="tiny", metadata={"help": "model size: tiny, small or base"})
    backbone: str | None = field(default=None, metadata={"help": "local DINOv3 checkpoint folder to upcycle"})
    router_mode: str | None = field(default=None, metadata={"help": "task or token"})
    num_experts: int | None = field(default=None)
    top_k: int | None = field(default=None, metadata={"help": "experts per routed unit"})
    image_size: int | None = field(default=None, metadata={"help": "processed image side (default: the preset's)"})
    augment: bool = field(default=True)
    synthetic_scale: float = field(default=1.0, metadata={"help": "size of the synthetic suite (x its size table)"})
    eval_examples_per_task: int | None = field(default=None, metadata={"help": "held-out examples per task (default: all)"})
    overwrite: bool = field(default=False, metadata={"help": "replace a model already in the output folder (and, once the "
                                                             "new model is saved, the old run's checkpoints)"})
    on_error: str = field(default="raise", metadata={"help": "a data row with a problem: raise (stop, naming file, line "
                                                             "and field) or skip (drop it, counted in the loading report)"})


def parse_arguments(argv=None) -> tuple[M2DinoRunArguments, M2DinoTrainingArguments]:
    """The run's own arguments and its `M2DinoTrainingArguments` (every `TrainingArguments` flag, and the
    multi-task ones: `--sampler`, `--task_weighting`, `--temperature`, `--distance_metrics`), with this command's
    defaults."""
    parser = HfArgumentParser((M2DinoRunArguments, M2DinoTrainingArguments))
    parser.set_defaults(sampler="mixed", output_dir="m2dino", report_to="none", remove_unused_columns=False, save_strategy="no",
                        eval_strategy="no", logging_steps=50, learning_rate=1e-3, weight_decay=0.05, warmup_steps=0.05,
                        lr_scheduler_type="cosine", per_device_train_batch_size=64, per_device_eval_batch_size=64,
                        max_steps=1000, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=1,
                        ddp_find_unused_parameters=True, disable_tqdm=False)
    try:
        run, training = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # a flag's value refused by the arguments' own checks: a command-line error
        raise SystemExit(str(error)) from None
    for name, value, valid in (("paradigm", run.paradigm, PARADIGMS), ("on_error", run.on_error, ON_ERROR)):
        if value not in valid:
            raise SystemExit(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    # Experts and heads a process does not use in a step have no gradient: DDP must look for them. With
    # activation checkpointing that needs the non-reentrant variant.
    training.ddp_find_unused_parameters = True
    training.activation_checkpointing_kwargs = {"use_reentrant": False}
    # The sampler draws global batches; accelerate gives each process its slice of every one.
    training.accelerator_config.split_batches = True
    return run, training


def load_sources(run, seed: int, image_size: int, registry):
    """`data.sources.load_sources` for the run arguments of `m2dino-train` (or arguments with the same names:
    `data`, and optionally `tasks`, `on_error`, `synthetic_scale`, `eval_examples_per_task`); a task or split
    the data lacks stops the command, naming it."""
    with argument_errors_exit():
        return data_sources.load_sources(
            run.data, seed, image_size, registry, tasks=getattr(run, "tasks", None) or None,
            on_error=getattr(run, "on_error", "raise"), synthetic_scale=getattr(run, "synthetic_scale", 1.0),
            eval_examples_per_task=getattr(run, "eval_examples_per_task", None),
        )


def plan_runs(run: M2DinoRunArguments, available: list[str], registry) -> list[tuple[str, list[str]]]:
    """(name, task ids) of each model the paradigm trains."""
    tasks = available
    if run.tasks:
        unknown = sorted(set(run.tasks) - set(available))
        if unknown:
            raise SystemExit(f"unknown task(s) or tasks without data: {unknown}; valid: {', '.join(available)}")
        tasks = [t for t in available if t in run.tasks]
    if not tasks:
        raise SystemExit("the task selection has no data")
    if run.paradigm == "au":
        return [("all", tasks)]
    if run.paradigm == "ts":
        return [(t, [t]) for t in tasks]
    specs = [t for t in registry if t.id in tasks]
    groups = clinical_groups(specs)
    if run.groups:
        with open(run.groups, encoding="utf-8") as f:
            declared = json.load(f)
        unknown = sorted({t for members in declared.values() for t in members} - {t.id for t in registry})
        groups = {name: [t for t in members if t in tasks] for name, members in declared.items()}
        listed = [t for members in groups.values() for t in members]
        twice = sorted({t for t in listed if listed.count(t) > 1})
        left_out = sorted(set(tasks) - set(listed))
        if twice or left_out or unknown:
            raise SystemExit(f"{run.groups}: tasks in two groups {twice}; tasks in no group {left_out}; unknown tasks {unknown}")
    return [(name, members) for name, members in groups.items() if members]


def build_model(run: M2DinoRunArguments, task_specs, image_size: int):
    overrides = {"tasks": [t.to_dict() for t in task_specs], "image_size": image_size}
    overrides.update({k: v for k, v in (("router_mode", run.router_mode), ("num_experts", run.num_experts),
                                        ("num_experts_per_tok", run.top_k)) if v is not None})
    if run.backbone:
        return M2DinoForMultiTask.from_dinov3(run.backbone, **overrides)
    return M2DinoForMultiTask(M2DinoConfig.from_preset(run.preset, **overrides))


def train_one(name, task_ids, run, training, sources, registry, image_size, callbacks=None) -> dict:
    train_source, eval_source, data_description = sources
    specs = [t for t in registry if t.id in task_ids]
    output_dir = training.output_dir
    resuming = training.resume_from_checkpoint
    if os.path.exists(os.path.join(output_dir, "config.json")) and not run.overwrite and not resuming:
        raise SystemExit(f"{output_dir} already holds a model; pass --overwrite to replace it")
    if resuming and resuming is not True and os.path.isdir(resuming):
        try:
            check_resume_tasks(resuming, [t.to_dict() for t in specs])
        except ValueError as error:
            raise SystemExit(str(error)) from None
    if not resuming and os.path.isdir(output_dir):
        old = sorted(n for n in os.listdir(output_dir) if n.startswith("checkpoint-"))
        if old and not run.overwrite:
            raise SystemExit(f"{output_dir} holds checkpoints of an earlier run ({', '.join(old)}): pass "
                             f"--resume_from_checkpoint to continue it, or --overwrite to start again")
        if old and training.process_index == 0:  # out of the new run's way; deleted once its model is in place
            set_aside_previous_checkpoints(output_dir)
            logger.warning("%s: the old run's checkpoints %s are kept in %s until the new model is saved",
                           output_dir, old, os.path.join(output_dir, ".previous-run-checkpoints"))
    set_seed(training.seed)
    model = build_model(run, specs, image_size)
    processor = M2DinoImageProcessor.from_config(model.config)
    augmenter = Augmenter(AugmentConfig(), registry=registry) if run.augment else None
    train_subset = TaskSubset(train_source, task_ids)
    train_dataset = ProcessedExamples(train_subset, processor, specs, augmenter, seed=training.data_seed or training.seed)
    eval_sets = examples_by_task(eval_source, task_ids, run.eval_examples_per_task)
    baseline_sets = examples_by_task(train_subset, task_ids, MAX_BASELINE_EXAMPLES)
    fit_heads(model, specs, baseline_sets)  # heads that keep statistics of their training labels
    trainer = MultiTaskTrainer(
        model=model, args=training, train_dataset=train_dataset, processor=processor, eval_sets=eval_sets,
        baseline_sets=baseline_sets, callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    trainer.evaluate()
    results = trainer.last_eval_results
    n_train = {t: train_subset.tasks.count(t) for t in task_ids}
    for task_id, result in results["tasks"].items():
        result["n_train"] = n_train[task_id]
    results.update(paradigm=run.paradigm, run=name, data=data_description, seed=training.seed, world_size=training.world_size,
                   max_steps=training.max_steps, preset=run.preset, router_mode=model.config.router_mode)
    if trainer.is_world_process_zero():
        save_final_model(output_dir, trainer.save_model, processor, results, trainer.state.log_history,
                         training.to_json_string())
    return results


def save_final_model(output_dir: str, save_weights, processor, results: dict, log_history: list, training_args_json: str):
    """Write the model (`save_weights(folder)`), its processor, results, log and card into a staging folder,
    then swap it in for `output_dir` in one step: the old model stays whole until the new one is complete.
    The output folder's subfolders (this run's checkpoints) are kept; the old run's set-aside checkpoints go."""
    from .cards import write_model_card

    remove_abandoned_staging(output_dir)
    with staged_model_folder(output_dir) as staging:
        save_weights(staging)
        # The Trainer pickles its arguments beside the weights; a folder meant for the hub keeps them as JSON.
        if os.path.exists(os.path.join(staging, "training_args.bin")):
            os.remove(os.path.join(staging, "training_args.bin"))
        with open(os.path.join(staging, "training_args.json"), "w", encoding="utf-8") as f:
            f.write(training_args_json)
        processor.save_pretrained(staging)
        with open(os.path.join(staging, "eval_results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        with open(os.path.join(staging, "train_log.json"), "w", encoding="utf-8") as f:
            json.dump(log_history, f, indent=1)
        carry_over(staging, output_dir)  # before the card, which lists the figures of results/
        write_model_card(staging)
        publish_model_folder(staging, output_dir)


def main(argv=None, callbacks=None) -> dict:
    """`m2dino-train`: the command line's arguments (`argv`, default `sys.argv[1:]`) to `train_models`."""
    return train_models(*parse_arguments(argv), callbacks=callbacks)


def train_models(run: M2DinoRunArguments, training: M2DinoTrainingArguments, callbacks=None) -> dict:
    """Train the models of `run.paradigm` (one, or one per task or group) and return their results by name.

    One run at a time uses `training.output_dir` (a lock file in it names the owner); each model is saved
    with its processor, results and card, replacing an earlier one only once the new one is complete."""
    lock = OutputFolderLock(training.output_dir) if training.process_index == 0 else None
    if lock is not None:
        try:
            lock.acquire()  # before anything slow: a second run into a busy folder fails at once
        except OutputFolderBusyError as error:
            raise SystemExit(str(error)) from None
    try:
        return _run(run, training, callbacks)
    finally:
        if lock is not None:
            lock.release()


def _run(run: M2DinoRunArguments, training: M2DinoTrainingArguments, callbacks) -> dict:
    if training.use_cpu and "OMP_NUM_THREADS" not in os.environ:
        # Leave a core to each data worker: oversubscribed OpenMP threads spin and slow small models many-fold.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - training.dataloader_num_workers))
    registry = list(FMC_UIA_TASKS + EXTRA_TASKS)
    image_size = run.image_size or M2DinoConfig.from_preset(run.preset).image_size
    sources = load_sources(run, training.data_seed or training.seed, image_size, registry)
    available_tasks = list(dict.fromkeys(task_list(sources[0])))
    available = [t.id for t in registry if t.id in available_tasks]
    runs = plan_runs(run, available, registry)
    root = training.output_dir
    all_results = {}
    for name, task_ids in runs:
        run_training = training
        if len(runs) > 1:
            run_training = type(training)(**{**training.to_dict(), "output_dir": os.path.join(root, f"{run.paradigm}_{name}")})
            run_training.accelerator_config.split_batches = True
        results = train_one(name, task_ids, run, run_training, sources, registry, image_size, callbacks)
        all_results[name] = results
        if run_training.process_index == 0:
            print(f"\n{PARADIGMS[run.paradigm]} model {name!r} -> {run_training.output_dir}\n{results_table(results)}", flush=True)
    return all_results


if __name__ == "__main__":
    main(sys.argv[1:])
