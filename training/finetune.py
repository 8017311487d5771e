"""`m2dino-finetune`: adapt a saved M2DINO to one task, existing or new, by several methods, and compare them.

    m2dino-finetune --model m2dino --task breast_2cls --data synthetic --methods linear-probe,lora \
        --output_dir finetune --max_steps 200

Methods (one command's methods share the task, data, seed and training budget):

    full          every weight trains
    linear-probe  the backbone is frozen; the task's head trains
    lora          LoRA on every layer's attention projections and on the MoE experts; the head trains (PEFT
                  `modules_to_save`)
    lora-experts  LoRA on the MoE experts only; the head trains

A new task (`--new_task FILE`, see `m2dino_training.new_task`) is added to the model first, and its router entries
train too, whatever the method. Every `TrainingArguments` flag works (`--max_steps`, `--learning_rate`, `--seed`...).

Output (`--output_dir`):

    finetune_<task>.{csv,json,md}  one row per method: trainable parameters, the task's challenge metrics on
                                   held-out data against the trivial baseline, training time, peak memory
    <method>/<task>/               full, linear-probe: an M2DINO folder; lora, lora-experts: a PEFT adapter named
                                   after the task, so `<method>/` collects the adapters of several tasks
    <method>-merged/<task>/        with --merge: the adapter merged into a plain M2DINO folder

`m2dino-finetune merge --model BASE --adapter ADAPTER_DIR --output_dir OUT` merges a saved adapter later. Loading,
switching and merging adapters in Python: `m2dino_training.adapters` (re-exported here).
"""

import argparse
import copy
import csv
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, set_seed

from modeling_m2dino import M2DinoImageProcessor

from .adapters import (
    load_adapters,
    load_base,
    merge_adapter,
    save_adapter,
    save_model_folder,
    set_adapter,
    weights_fingerprint,
    write_card,
    write_results,
)
from .data.augment import Augmenter, AugmentConfig
from .cli import argument_errors_exit
from .data.collate import ProcessedExamples
from .data.sources import TaskSubset, load_sources
from .evaluate import MAX_BASELINE_EXAMPLES, examples_by_task
from .new_task import ROUTER_INITS, add_task, read_task_file, train_task_routing
from .trainer import MultiTaskTrainer
from .training_args import M2DinoTrainingArguments

METHODS = {
    "full": "every weight trains",
    "linear-probe": "backbone frozen; the task head trains",
    "lora": "LoRA on attention q/k/v/o and MoE experts; the task head trains",
    "lora-experts": "LoRA on the MoE experts only; the task head trains",
}
PEFT_METHODS = ("lora", "lora-experts")

# Full-match regexes over module names (never "all-linear": it would also wrap the heads and the routers).
ATTENTION_PROJECTIONS = r"(?:.*\.)?layer\.\d+\.attention\.(?:q_proj|k_proj|v_proj|o_proj)"
EXPERT_PROJECTIONS = r"(?:.*\.)?mlp\.experts\.\d+\.(?:gate_proj|up_proj|down_proj)"
LORA_TARGETS = {
    "lora": f"(?:{ATTENTION_PROJECTIONS}|{EXPERT_PROJECTIONS})",
    "lora-experts": EXPERT_PROJECTIONS,
}


@dataclass
class FinetuneArguments:
    model: str | None = field(default=None, metadata={"help": "saved M2DINO folder (written by m2dino-train)"})
    task: str | None = field(default=None, metadata={"help": "task id to fine-tune (default: the --new_task's)"})
    methods: str = field(default="linear-probe,lora", metadata={"help": f"comma-separated: {', '.join(METHODS)}"})
    data: str = field(default="synthetic", metadata={"help": "'synthetic', a challenge-layout folder or a datasets folder"})
    new_task: str | None = field(default=None, metadata={"help": "JSON file declaring a task the model lacks"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.0)
    use_dora: bool = field(default=False, metadata={"help": "weight-decomposed LoRA (DoRA)"})
    router_init: str = field(default="mean", metadata={"help": "a new task's router entry: mean (of the others) or random"})
    synthetic_scale: float = field(default=1.0, metadata={"help": "size of the synthetic suite (x its size table)"})
    eval_examples_per_task: int | None = field(default=None, metadata={"help": "held-out examples (default: all)"})
    augment: bool = field(default=True)
    merge: bool = field(default=False, metadata={"help": "also save each adapter merged into a plain M2DINO folder"})
    overwrite: bool = field(default=False, metadata={"help": "replace results already in the output folders"})


def parse_arguments(argv=None) -> tuple[FinetuneArguments, M2DinoTrainingArguments]:
    parser = HfArgumentParser((FinetuneArguments, M2DinoTrainingArguments))
    # one task: batches of that task, drawn uniformly
    parser.set_defaults(sampler="homogeneous", task_weighting="uniform", output_dir="finetune", report_to="none", remove_unused_columns=False, save_strategy="no",
                        eval_strategy="no", logging_steps=25, learning_rate=2e-4, weight_decay=0.01,
                        warmup_steps=0.05, lr_scheduler_type="cosine", per_device_train_batch_size=16,
                        per_device_eval_batch_size=32, max_steps=200, use_cpu=not torch.cuda.is_available(),
                        dataloader_num_workers=2, label_names=["labels"])
    args, training = parser.parse_args_into_dataclasses(args=argv)
    if not args.model:
        raise SystemExit("--model is required: a saved M2DINO folder")
    parse_methods(args.methods)
    if args.router_init not in ROUTER_INITS:
        raise SystemExit(f"unknown router_init {args.router_init!r}; valid: {', '.join(ROUTER_INITS)}")
    # As in m2dino-train: the sampler draws global batches that accelerate splits, and heads or experts unused
    # in a step have no gradient under DDP.
    training.accelerator_config.split_batches = True
    training.ddp_find_unused_parameters = True
    return args, training


def parse_methods(text: str) -> list[str]:
    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SystemExit(f"unknown method(s) {unknown or [text]}; valid: {', '.join(METHODS)}")
    return methods


# ------------------------------------------------------------------------------------------------ the methods


def prepare_model(model, method: str, task_id: str, args: FinetuneArguments, new_task: bool = False):
    """The model ready for `method`: its own parameters (un)frozen, or wrapped by PEFT with an adapter named
    `task_id`. A new task's router rows train in every method (outside `full`, only its rows: see
    `train_task_routing`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if task_id not in model.heads:
        raise ValueError(f"the model has no head for task {task_id!r}; its tasks: {', '.join(model.heads)}")
    if method == "full":
        model.requires_grad_(True)
        return model
    if method == "linear-probe":
        model.requires_grad_(False)
        model.heads[task_id].requires_grad_(True)
        if new_task:
            train_task_routing(model, task_id)
        return model
    from peft import LoraConfig, get_peft_model

    peft_config = LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, use_dora=args.use_dora,
        target_modules=LORA_TARGETS[method],
        # PEFT keeps a per-adapter copy of these, so the base model's head and routers stay as they were.
        modules_to_save=[f"heads.{task_id}"] + (["mlp.router"] if new_task else []),
    )
    peft_model = get_peft_model(model, peft_config, adapter_name=task_id)
    if new_task:
        train_task_routing(peft_model, task_id)
    return peft_model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters of the model as it trains; for a PEFT model the same numbers as
    `get_nb_trainable_parameters()` (adapter weights and modules_to_save copies included)."""
    trainable = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total


class FinetuneTrainer(MultiTaskTrainer):
    def get_decay_parameter_names(self, model) -> list[str]:
        # Router tables hold one row per task: decay would shrink the rows of tasks that get no gradient here.
        return [name for name in super().get_decay_parameter_names(model) if ".router." not in name]


class PeakMemory:
    """Peak memory growth, in MiB, while the block runs.

    CUDA: the caching allocator's peak (`torch.cuda.max_memory_allocated`) above its level at the start. CPU: the
    resident set size (/proc/self/statm, or psutil) sampled every `interval` seconds by a background thread,
    peak above the start; memory the process kept from earlier work can be reused unseen, so several methods in
    one process read low after the first.
    """

    def __init__(self, device, interval: float = 0.005):
        self.cuda = torch.device(device).type == "cuda"
        self.interval = interval
        self.measure = "cuda_max_allocated" if self.cuda else "rss_sampled"
        self.peak_mib = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = self.peak = resident_bytes()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(self.interval):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self.stop.set()
            self.thread.join()
            peak = max(self.peak, resident_bytes())
        self.peak_mib = max(0, peak - self.start) / 2**20
        return False


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


# ------------------------------------------------------------------------------------------------- the command


@dataclass
class TaskData:
    train: TaskSubset
    eval_sets: dict
    baseline_sets: dict
    description: dict


def load_task_data(args: FinetuneArguments, task_id: str, registry, seed: int, image_size: int) -> TaskData:
    with argument_errors_exit():
        train_source, eval_source, description = load_sources(
            args.data, seed, image_size, registry, tasks=[task_id], synthetic_scale=args.synthetic_scale,
            eval_examples_per_task=args.eval_examples_per_task,
        )
    train = TaskSubset(train_source, [task_id])
    eval_sets = examples_by_task(eval_source, [task_id], args.eval_examples_per_task)
    if not len(train) or not eval_sets:
        hint = " (the synthetic suite holds the registry's tasks: FMC_UIA_TASKS and EXTRA_TASKS)" if args.data == "synthetic" else ""
        raise SystemExit(f"{args.data} has no {'training' if not len(train) else 'held-out'} examples of task {task_id!r}{hint}")
    return TaskData(train, eval_sets, examples_by_task(train, [task_id], MAX_BASELINE_EXAMPLES), description)


def method_folder(output_dir: str, method: str, task_id: str) -> str:
    return os.path.join(output_dir, method, task_id)


def finetune_method(method, base, args, training, task_id, new_specs, data: TaskData, fingerprint) -> dict:
    """Fine-tunes a fresh copy of `base` by one method, evaluates it on the held-out data and saves it."""
    set_seed(training.seed)  # the same start for every method: new heads, LoRA init, data order
    model = copy.deepcopy(base)
    for spec in new_specs:  # the task fine-tuned here has its training examples: its new head is fitted to them
        add_task(model, spec, args.router_init, data.baseline_sets.get(spec.id))
    registry = model.config.task_specs
    model = prepare_model(model, method, task_id, args, new_task=task_id in {s.id for s in new_specs})
    trainable, total = count_parameters(model)
    processor = M2DinoImageProcessor.from_config(model.config)
    augmenter = Augmenter(AugmentConfig(), registry=registry) if args.augment else None
    train_dataset = ProcessedExamples(data.train, processor, registry, augmenter, seed=training.data_seed or training.seed)
    method_training = copy.deepcopy(training)
    method_training.output_dir = method_folder(training.output_dir, method, task_id)
    trainer = FinetuneTrainer(model=model, args=method_training, train_dataset=train_dataset, processor=processor,
                              eval_sets=data.eval_sets, baseline_sets=data.baseline_sets)
    with PeakMemory(method_training.device) as memory:
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
    trainer.evaluate()
    results = trainer.last_eval_results
    results.update(method=method, task=task_id, base_model=os.path.abspath(args.model), data=data.description,
                   seed=training.seed, max_steps=training.max_steps, learning_rate=training.learning_rate,
                   n_train=len(data.train))
    task_results = {**results["tasks"][task_id], "data": data.description}
    output = method_folder(training.output_dir, method, task_id)
    if trainer.is_world_process_zero():
        if os.path.exists(output):
            shutil.rmtree(output)
        if method in PEFT_METHODS:
            save_adapter(model, os.path.dirname(output), task_id, method, args.model, fingerprint, new_specs)
            write_results(output, results)
            write_card(output, (args.model, task_id, method), task_results)
            if args.merge:
                merged_dir = method_folder(training.output_dir, f"{method}-merged", task_id)
                merged = model.merge_and_unload()
                merged.config.default_task = task_id
                save_model_folder(merged, args.model, merged_dir)
                write_results(merged_dir, results)
                write_card(merged_dir)
        else:
            model.config.default_task = task_id
            save_model_folder(model, args.model, output)
            write_results(output, results)
            write_card(output)
    result = results["tasks"][task_id]
    return {"method": method, "task": task_id, "trainable_params": trainable, "total_params": total,
            "trainable_percent": 100.0 * trainable / total, "primary_metric": result["primary_metric"],
            "metrics": result["metrics"], "baseline": result.get("baseline", {}), "difference": result.get("difference"),
            "beats_baseline": result.get("beats_baseline"), "n_eval": result["n_eval"],
            "train_seconds": train_seconds, "peak_memory_mib": memory.peak_mib, "memory_measure": memory.measure,
            "output": output}


def write_tables(rows: list[dict], output_dir: str, task_id: str, settings: dict) -> dict[str, str]:
    """The comparison as CSV (flat columns), JSON (rows and shared settings) and Markdown; returns the paths."""
    stem = os.path.join(output_dir, f"finetune_{task_id}")
    flat_rows = []
    for row in rows:
        flat = {k: v for k, v in row.items() if k not in ("metrics", "baseline", "difference")}
        flat.update({f"metric_{k}": v for k, v in row["metrics"].items()})
        flat.update({f"baseline_{k}": v for k, v in row["baseline"].items()})
        if row["difference"]:
            flat.update(diff_ci95_lower=row["difference"]["ci95_lower"], diff_ci95_upper=row["difference"]["ci95_upper"])
        flat_rows.append(flat)
    columns = list(dict.fromkeys(k for flat in flat_rows for k in flat))
    with open(f"{stem}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat_rows)
    with open(f"{stem}.json", "w", encoding="utf-8") as f:
        json.dump({"task": task_id, "settings": settings, "methods": rows}, f, indent=2)
    with open(f"{stem}.md", "w", encoding="utf-8") as f:
        f.write(markdown_table(rows) + "\n")
    return {kind: f"{stem}.{kind}" for kind in ("csv", "json", "md")}


def markdown_table(rows: list[dict]) -> str:
    key = rows[0]["primary_metric"]
    lines = [f"| method | trainable params | trainable % | {key} | baseline | diff 95% CI | beats baseline | train s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        diff = row["difference"]
        ci = f"[{diff['ci95_lower']:+.3f}, {diff['ci95_upper']:+.3f}]" if diff else "-"
        beats = {True: "yes", False: "no"}.get(row["beats_baseline"], "-")
        baseline = row["baseline"].get(key, float("nan"))
        lines.append(f"| {row['method']} | {row['trainable_params']:,} | {row['trainable_percent']:.2f} | "
                     f"{row['metrics'][key]:.3f} | {baseline:.3f} | {ci} | {beats} | {row['train_seconds']:.1f} | "
                     f"{row['peak_memory_mib']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    """`m2dino-finetune` (and `m2dino-finetune merge`): the command line's arguments to `finetune`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    return finetune(*parse_arguments(argv))


def finetune(args: FinetuneArguments, training: M2DinoTrainingArguments) -> list[dict]:
    """Fine-tune `args.model` to one task by each of `args.methods`, evaluate and save each, write the comparison
    tables into `training.output_dir` and return one row per method (see the module docstring)."""
    methods = parse_methods(args.methods)
    try:
        base = load_base(args.model)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    fingerprint = weights_fingerprint(base)
    new_specs = []
    if args.new_task:
        try:
            new_specs = read_task_file(args.new_task, base.config.task_ids)
        except ValueError as err:
            raise SystemExit(str(err)) from None
    task_id = args.task or (new_specs[0].id if len(new_specs) == 1 else None)
    valid = base.config.task_ids + [s.id for s in new_specs]
    if task_id not in valid:
        raise SystemExit(f"unknown task {task_id!r}; valid: {', '.join(valid)}" if task_id else
                         f"--task is required; valid: {', '.join(valid)}")
    taken = [method_folder(training.output_dir, m, task_id) for m in methods]
    taken = [p for p in taken if os.path.exists(p)]
    if taken and not args.overwrite:
        raise SystemExit(f"{', '.join(taken)} already exist(s); pass --overwrite to replace")
    registry = base.config.task_specs + new_specs
    image_size = base.config.image_size if isinstance(base.config.image_size, int) else base.config.image_size[0]
    data = load_task_data(args, task_id, registry, training.data_seed or training.seed, image_size)
    rows = [finetune_method(m, base, args, training, task_id, new_specs, data, fingerprint) for m in methods]
    settings = {"model": os.path.abspath(args.model), "data": data.description, "seed": training.seed,
                "max_steps": training.max_steps, "learning_rate": training.learning_rate,
                "per_device_train_batch_size": training.per_device_train_batch_size, "lora_r": args.lora_r,
                "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout, "use_dora": args.use_dora,
                "new_tasks": [s.to_dict() for s in new_specs], "n_train": len(data.train)}
    if training.process_index == 0:
        paths = write_tables(rows, training.output_dir, task_id, settings)
        print(f"\nfine-tuning {task_id!r} ({len(data.train)} training examples) -> {paths['md']}\n{markdown_table(rows)}",
              flush=True)
    return rows


def merge_main(argv) -> str:
    parser = argparse.ArgumentParser(prog="m2dino-finetune merge", description=merge_adapter.__doc__)
    parser.add_argument("--model", required=True, help="the base M2DINO folder the adapter was trained on")
    parser.add_argument("--adapter", required=True, help="adapter folder (<method>/<task>/ of m2dino-finetune)")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    try:
        path = merge_adapter(args.model, args.adapter, args.output_dir)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(str(err)) from None
    print(f"merged {args.adapter} into {args.model} -> {path}")
    return path


__all__ = ["LORA_TARGETS", "METHODS", "FinetuneArguments", "PeakMemory", "count_parameters", "finetune", "load_adapters",
           "main", "merge_adapter", "prepare_model", "set_adapter"]

if __name__ == "__main__":
    main()
