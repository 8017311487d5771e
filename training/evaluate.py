"""Held-out evaluation with the challenge metrics, against trivial baselines; and `m2dino-evaluate`.

Predictions are made one task at a time, post-processed to each image's original pixels, and scored with
`m2dino_training.metrics` (the FMC_UIA organisers' metrics under their names: DSC and HD, Accuracy, AUC,
F1_macro, F1_weighted, MCC, IoU, MRE; HD95 and AP50 as extra figures); nothing of variable shape is ever
concatenated across batches. The same predictions written by `m2dino-predict` and scored by `m2dino-score`
give the same figures. Every task is
compared with its trivial baseline (fitted on training labels only) by a paired bootstrap 95% CI of the
per-sample difference; the checkpoint score is the mean normalised primary metric (see `metrics`).
"""

import argparse
import json
import math
import os

import numpy as np
import torch

from modeling_m2dino.image_processing_m2dino import image_size
from modeling_m2dino.task_types import TASK_TYPES

from . import metrics as challenge
from .data.collate import references_of, task_list
from .task_types import training_task_type

MAX_BASELINE_EXAMPLES = 256  # training examples per task that fit the trivial baseline


def examples_by_task(source, tasks=None, limit: int | None = None) -> dict[str, list[dict]]:
    """Decoded examples of a source grouped by task (at most `limit` per task, evenly spaced)."""
    positions: dict[str, list[int]] = {}
    for index, task in enumerate(task_list(source)):
        if tasks is None or task in tasks:
            positions.setdefault(task, []).append(index)
    grouped = {}
    for task, indices in positions.items():
        if limit is not None and len(indices) > limit:
            indices = [indices[int(i)] for i in np.linspace(0, len(indices) - 1, limit)]
        grouped[task] = [source[i] for i in indices]
    return grouped


def load_split(data_root: str, split: str, tasks, registry, on_error: str = "raise", require_labels: bool = False):
    """One split of a challenge layout or datasets folder, and its loading report.

    `split="all"`: every row of `data_root/csv_files/` (a challenge layout without train/ and val/ folders).
    """
    from .data.fmc_uia import load_fmc_uia
    from .data.hf_folder import load_data

    root = os.fspath(data_root)
    is_layout = os.path.isdir(os.path.join(root, "csv_files"))
    has_split_folders = all(os.path.isdir(os.path.join(root, name, "csv_files")) for name in ("train", "val"))
    if split == "all":
        if has_split_folders or not is_layout:
            raise ValueError(f"--split all needs a folder with csv_files/ (and no train/ and val/ folders); {root} is "
                             "not one: pass --split train, val or test")
        # val_fraction 0: the seeded draw puts every row into "train", which is then the whole folder.
        data = load_fmc_uia(root, split="train", tasks=tasks, registry=registry, on_error=on_error, val_fraction=0.0,
                            require_labels=require_labels)
    elif is_layout or has_split_folders:
        data = load_fmc_uia(root, split=split, tasks=tasks, registry=registry, on_error=on_error,
                            require_labels=require_labels)
    else:
        data = load_data(root, split=split, tasks=tasks, registry=registry, on_error=on_error)
    return data, loading_report(data)


def loading_report(dataset) -> dict:
    """The loader's report of a dataset (rows kept, left out, skipped), or {} when it has none."""
    from .data.fmc_uia import load_report

    try:
        return load_report(dataset)
    except (json.JSONDecodeError, AttributeError, TypeError):
        return {}


@torch.no_grad()
def predict(model, processor, task, examples: list[dict], batch_size: int = 32) -> list:
    """Predictions for one task's examples, in original pixels, in the form the metrics take."""
    impl = TASK_TYPES[task.type]
    device = next(model.parameters()).device
    predictions = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        inputs = processor([e["image"] for e in chunk], bits_stored=[e.get("bits_stored") for e in chunk])
        output = model(inputs["pixel_values"].to(device), tasks=task.id).task_outputs[task.id]
        predictions.extend(impl.decode(output, inputs["original_sizes"].tolist()))
    return predictions


def baseline_predictions(task, train_examples: list[dict], eval_examples: list[dict]):
    return challenge.trivial_baseline_predictions(
        task,
        references_of(task, train_examples),
        references_of(task, eval_examples),
        train_sizes=[image_size(e["image"]) for e in train_examples],
        eval_sizes=[image_size(e["image"]) for e in eval_examples],
    )


def scalars(values: dict) -> dict:
    """The scalar figures of a metrics dict (arrays and the sample count, kept as `n_eval`, dropped)."""
    return {k: float(v) for k, v in values.items()
            if k != "num_samples" and np.ndim(v) == 0 and not isinstance(v, (bool, str))}


def evaluate_task(model, processor, task, eval_examples, train_examples=None, batch_size: int = 32, seed: int = 0,
                  distances: bool = True) -> dict:
    """One task's metrics, and (given training examples) its baseline and the bootstrap CI of the difference.
    `distances=False` skips the segmentation surface distances (HD, HD95)."""
    references = references_of(task, eval_examples)
    sizes = [image_size(e["image"]) for e in eval_examples]
    predictions = predict(model, processor, task, eval_examples, batch_size)
    kind = training_task_type(task)
    predictions = kind.stack(predictions)
    model_metrics = challenge.task_metrics(task, predictions, references, image_sizes=sizes, distances=distances)
    result = {"type": task.type, "group": task.group, "n_eval": len(eval_examples),
              "primary_metric": kind.primary_metric, "metrics": scalars(model_metrics)}
    if train_examples:
        baseline = challenge.task_metrics(task, baseline_predictions(task, train_examples, eval_examples), references,
                                          image_sizes=sizes, distances=distances)
        key = kind.per_sample_key
        mean, lower, upper = challenge.bootstrap_difference_ci(
            model_metrics[key], baseline[key], higher_is_better=kind.higher_is_better, seed=seed
        )
        result["baseline"] = scalars(baseline)
        result["difference"] = {"per_sample": key, "mean": mean, "ci95_lower": lower, "ci95_upper": upper}
        result["beats_baseline"] = bool(lower > 0)
    return result


def evaluate_model(model, processor, eval_sets: dict, train_sets: dict | None = None, batch_size: int = 32, seed: int = 0,
                   distances: bool = True) -> dict:
    """Per-task results for every task in `eval_sets` (task id -> examples) and the checkpoint `score`."""
    specs = {t.id: t for t in model.config.task_specs}
    was_training = model.training
    model.eval()
    try:
        results = {
            task_id: evaluate_task(model, processor, specs[task_id], examples, (train_sets or {}).get(task_id), batch_size,
                                   seed, distances)
            for task_id, examples in eval_sets.items()
        }
    finally:
        model.train(was_training)
    baselines = {t: r["baseline"] for t, r in results.items() if "baseline" in r}
    diagonals = {t: float(np.mean([math.hypot(*image_size(e["image"])) for e in eval_sets[t]])) for t in results}
    score = challenge.mean_normalized_score({t: r["metrics"] for t, r in results.items()},
                                            {t: r["type"] for t, r in results.items()}, baselines, diagonals)
    return {"score": score, "tasks": results}


def flat_metrics(results: dict, prefix: str = "eval") -> dict[str, float]:
    """`{prefix}_score` and `{prefix}_<task>_<metric>` as the Trainer logs them."""
    flat = {f"{prefix}_score": results["score"]}
    for task_id, result in results["tasks"].items():
        flat.update({f"{prefix}_{key}": value for key, value in challenge.metrics_with_prefix(task_id, result["metrics"]).items()})
    return flat


def results_table(results: dict) -> str:
    """A Markdown table: per task the challenge's figures, then its primary metric against the trivial
    baseline with the 95% CI of the per-sample difference (positive = the model is better)."""
    lines = ["| task | type | n | challenge metrics | primary | model | baseline | diff 95% CI | beats baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task_id, r in results["tasks"].items():
        key = r["primary_metric"]
        figures = ", ".join(f"{name} {r['metrics'][name]:.3f}" for name in training_task_type(r["type"]).challenge_figures
                            if name in r["metrics"])
        baseline = r.get("baseline", {}).get(key, float("nan"))
        diff = r.get("difference")
        ci = f"[{diff['ci95_lower']:+.3f}, {diff['ci95_upper']:+.3f}]" if diff else "-"
        beats = {True: "yes", False: "NO"}.get(r.get("beats_baseline"), "-")
        lines.append(f"| {task_id} | {r['type']} | {r['n_eval']} | {figures} | {key} | {r['metrics'][key]:.3f} | "
                     f"{baseline:.3f} | {ci} | {beats} |")
    lines.append(f"\nmean normalised score: {results['score']:.4f}")
    return "\n".join(lines)


def evaluate_folder(model_dir: str, data: str, split: str = "val", tasks=None, batch_size: int = 32,
                    on_error: str = "raise") -> dict:
    """The challenge metrics of a saved model on one split of a challenge-layout or datasets folder, against the
    trivial baselines fitted on its train split (when the split evaluated is another). Rows of tasks the model does
    not serve are left out and counted, rows with problems skipped with `on_error="skip"`; both are printed and in
    the results. A task the model does not serve, or a split the data lacks, is a ValueError."""
    from modeling_m2dino import M2DinoForMultiTask, M2DinoImageProcessor

    from .data.hf_folder import load_data

    model = M2DinoForMultiTask.from_pretrained(model_dir)
    processor = M2DinoImageProcessor.from_pretrained(model_dir)
    tasks = tasks or model.served_tasks
    unknown = sorted(set(tasks) - set(model.served_tasks))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the model serves {', '.join(model.served_tasks)}")
    # Rows of tasks the model does not serve are left out and counted, not refused.
    loaded = load_data(data, tasks=tasks, registry=model.config.task_specs, on_error=on_error)
    if split not in loaded:
        raise ValueError(f"{data} has no split {split!r}; it has {list(loaded)}")
    report = loading_report(loaded[split])
    left_out = (report.get("left_out") or {}).get(split, {})
    if left_out:
        print("left out (tasks the model does not serve or not asked for), rows per task: "
              + ", ".join(f"{task} {n}" for task, n in left_out.items()))
    skipped = (report.get("skipped") or {}).get(split) or {}
    if skipped:
        print("skipped (rows with problems), rows per task: " + ", ".join(f"{task} {n}" for task, n in skipped.items()))
        for problem in report.get("problems", [])[:10]:
            print(f"  {problem}")
    eval_sets = examples_by_task(loaded[split], tasks)
    if not eval_sets:
        raise ValueError(f"no examples of tasks {tasks} in split {split!r} of {data}")
    train_sets = examples_by_task(loaded["train"], tasks, MAX_BASELINE_EXAMPLES) if "train" in loaded and split != "train" else None
    results = evaluate_model(model, processor, eval_sets, train_sets, batch_size)
    results.update(model=os.path.abspath(model_dir), data=os.path.abspath(data), split=split, left_out=left_out,
                   skipped=skipped)
    return results


def main(argv=None):
    """`m2dino-evaluate`: the command line's arguments to `evaluate_folder`; prints the table, writes `--output`."""
    parser = argparse.ArgumentParser(description="Score a saved M2DINO model on a challenge-layout or datasets folder.")
    parser.add_argument("--model", required=True, help="saved M2DINO folder")
    parser.add_argument("--data", required=True, help="challenge-layout folder or datasets folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--tasks", nargs="+", help="task ids (default: every task of the model present in the data)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output", help="write the results JSON here")
    parser.add_argument("--on_error", choices=("raise", "skip"), default="raise",
                        help="a row with a problem (unreadable image, bad label): stop (raise) or leave it out and report it (skip)")
    args = parser.parse_args(argv)
    from .cli import argument_errors_exit, print_and_write

    with argument_errors_exit():
        results = evaluate_folder(args.model, args.data, args.split, args.tasks, args.batch_size, args.on_error)
    print_and_write(results_table(results), results, args.output)
    return results


if __name__ == "__main__":
    main()
