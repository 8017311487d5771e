"""Held-out evaluation with the challenge metrics, against trivial baselines; and `m2dino-evaluate`.

Predictions are made one task at a time, post-processed to each image's original pixels, and scored with
`m2dino_training.metrics`; nothing of variable shape is ever concatenated across batches. Every task is
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
from modeling_m2dino.modeling_m2dino import TASK_TYPE_IMPLEMENTATIONS

from . import metrics as challenge
from .data.collate import references_of, task_list

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


@torch.no_grad()
def predict(model, processor, task, examples: list[dict], batch_size: int = 32) -> list:
    """Predictions for one task's examples, in original pixels, in the form the metrics take."""
    impl = TASK_TYPE_IMPLEMENTATIONS[task.type]
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
    return {k: float(v) for k, v in values.items() if np.ndim(v) == 0 and not isinstance(v, (bool, str))}


def evaluate_task(model, processor, task, eval_examples, train_examples=None, batch_size: int = 32, seed: int = 0) -> dict:
    """One task's metrics, and (given training examples) its baseline and the bootstrap CI of the difference."""
    references = references_of(task, eval_examples)
    sizes = [image_size(e["image"]) for e in eval_examples]
    predictions = predict(model, processor, task, eval_examples, batch_size)
    if task.type == "classification":
        predictions = np.stack(predictions)
    model_metrics = challenge.task_metrics(task, predictions, references, image_sizes=sizes)
    result = {"type": task.type, "group": task.group, "n_eval": len(eval_examples),
              "primary_metric": challenge.PRIMARY_METRIC[task.type], "metrics": scalars(model_metrics)}
    if train_examples:
        baseline = challenge.task_metrics(task, baseline_predictions(task, train_examples, eval_examples), references,
                                          image_sizes=sizes)
        key = challenge.PER_SAMPLE_KEY[task.type]
        mean, lower, upper = challenge.bootstrap_difference_ci(
            model_metrics[key], baseline[key], higher_is_better=challenge.PER_SAMPLE_HIGHER_IS_BETTER[task.type], seed=seed
        )
        result["baseline"] = scalars(baseline)
        result["difference"] = {"per_sample": key, "mean": mean, "ci95_lower": lower, "ci95_upper": upper}
        result["beats_baseline"] = bool(lower > 0)
    return result


def evaluate_model(model, processor, eval_sets: dict, train_sets: dict | None = None, batch_size: int = 32, seed: int = 0) -> dict:
    """Per-task results for every task in `eval_sets` (task id -> examples) and the checkpoint `score`."""
    specs = {t.id: t for t in model.config.task_specs}
    was_training = model.training
    model.eval()
    try:
        results = {
            task_id: evaluate_task(model, processor, specs[task_id], examples, (train_sets or {}).get(task_id), batch_size, seed)
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
    """A Markdown table: per task its primary metric, the baseline's, and the 95% CI of the difference."""
    lines = ["| task | type | n | metric | model | baseline | diff 95% CI | beats baseline |", "|---|---|---|---|---|---|---|---|"]
    for task_id, r in results["tasks"].items():
        key = r["primary_metric"]
        baseline = r.get("baseline", {}).get(key, float("nan"))
        diff = r.get("difference")
        ci = f"[{diff['ci95_lower']:+.3f}, {diff['ci95_upper']:+.3f}]" if diff else "-"
        beats = {True: "yes", False: "NO"}.get(r.get("beats_baseline"), "-")
        lines.append(f"| {task_id} | {r['type']} | {r['n_eval']} | {key} | {r['metrics'][key]:.3f} | {baseline:.3f} | {ci} | {beats} |")
    lines.append(f"\nmean normalised score: {results['score']:.4f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Score a saved M2DINO model on a challenge-layout or datasets folder.")
    parser.add_argument("--model", required=True, help="saved M2DINO folder")
    parser.add_argument("--data", required=True, help="challenge-layout folder or datasets folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--tasks", nargs="+", help="task ids (default: every task of the model present in the data)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output", help="write the results JSON here")
    args = parser.parse_args(argv)

    from modeling_m2dino import M2DinoForMultiTask, M2DinoImageProcessor

    from .data.hf_folder import load_data

    model = M2DinoForMultiTask.from_pretrained(args.model)
    processor = M2DinoImageProcessor.from_pretrained(args.model)
    tasks = args.tasks or model.served_tasks
    unknown = sorted(set(tasks) - set(model.served_tasks))
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; the model serves {', '.join(model.served_tasks)}")
    data = load_data(args.data, registry=model.config.task_specs)
    eval_sets = examples_by_task(data[args.split], tasks)
    if not eval_sets:
        raise SystemExit(f"no examples of tasks {tasks} in split {args.split!r} of {args.data}")
    train_sets = examples_by_task(data["train"], tasks, MAX_BASELINE_EXAMPLES) if "train" in data and args.split != "train" else None
    results = evaluate_model(model, processor, eval_sets, train_sets, args.batch_size)
    results.update(model=os.path.abspath(args.model), data=os.path.abspath(args.data), split=args.split)
    print(results_table(results))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
