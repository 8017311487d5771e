"""M2DINO in a plain `transformers.Trainer`: a collator whose labels survive the Trainer's gathering, and a
`compute_metrics` with the challenge metrics.

`Trainer.evaluate` / `Trainer.predict` concatenate every batch's labels and predictions (and, under several
processes, gather them) before `compute_metrics` sees them. `TrainerCollator` gives labels in the fixed layout of
`modeling_m2dino.per_sample` and `M2DinoForMultiTask` returns its `predictions` in the same kind of layout, so both
arrive as dicts of arrays with one row per example, in dataset order. `ChallengeMetrics` splits them by task and
scores each task with `m2dino_training.metrics`, giving the names `MultiTaskTrainer` logs (`<task>_<metric>` and
`score`; the Trainer adds the `eval_` prefix).
"""

import math

import numpy as np
import torch

from modeling_m2dino.per_sample import batch_labels, outputs_by_task
from modeling_m2dino.task_types import TASK_TYPES

from . import metrics as challenge
from .data.collate import collate
from .evaluate import scalars
from .task_types import training_task_type


class TrainerCollator:
    """Collates processed examples (`ProcessedExamples` items) into `pixel_values`, `tasks` and fixed-layout
    `labels` for the tasks of `config` (an `M2DinoConfig`): see `modeling_m2dino.per_sample` for the layout."""

    def __init__(self, config):
        self.specs = config.task_specs
        self.task_index = {task.id: i for i, task in enumerate(self.specs)}

    def __call__(self, samples: list[dict]) -> dict:
        batch = collate(samples)
        unknown = sorted(set(batch["tasks"]) - set(self.task_index))
        if unknown:
            raise ValueError(f"TrainerCollator: examples of task(s) {unknown} the model does not have")
        labels = batch["labels"]
        batch["labels"] = batch_labels(
            labels, [self.task_index[t] for t in batch["tasks"]], self.specs, tuple(batch["pixel_values"].shape[-2:]),
            original_sizes=[label["original_size"] for label in labels],
        )
        return batch


def references(task, labels: dict, positions: np.ndarray, original_sizes: np.ndarray):
    """A task's references from the gathered labels, as `metrics.task_metrics` takes them (each type's
    `layout_references`: class indices, masks at the processed size, boxes and points in original pixels)."""
    return training_task_type(task).layout_references(task, labels, positions, original_sizes)


class ChallengeMetrics:
    """`compute_metrics` for `Trainer(model=M2DinoForMultiTask, data_collator=TrainerCollator(config), ...)`.

    Per task in the evaluated data: the challenge metrics of `m2dino_training.metrics` as `<task>_<metric>`, and
    `score`, their mean normalised primary metric. Classification, detection and regression are scored in
    original pixels, as `m2dino-evaluate` does. Segmentation is scored at the processed size (the Trainer gathers
    masks of one size): the same numbers when the images are already at that size, else close to them; the
    challenge's own figures come from `m2dino-evaluate`.
    """

    def __init__(self, config):
        self.specs = config.task_specs

    def per_task(self, eval_prediction) -> dict:
        """Task id -> (type, metrics dict, mean image diagonal in original pixels)."""
        predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
        if not isinstance(predictions, dict) or "task_ids" not in predictions:
            raise ValueError(
                "ChallengeMetrics needs the predictions of M2DinoForMultiTask in eval mode (a dict with 'task_ids'), "
                f"got {type(predictions).__name__}"
            )
        if not isinstance(labels, dict) or not np.array_equal(np.asarray(labels["task_ids"]), np.asarray(predictions["task_ids"])):
            raise ValueError("ChallengeMetrics needs labels from TrainerCollator, row for row with the predictions")
        results = {}
        for task_id, (positions, output) in outputs_by_task(predictions, self.specs).items():
            task = self.specs[[t.id for t in self.specs].index(task_id)]
            kind = training_task_type(task)
            original_sizes = np.asarray(labels["original_sizes"])[positions]
            refs = references(task, labels, positions, original_sizes)
            sizes = kind.layout_sizes(refs, original_sizes)
            with torch.no_grad():
                preds = kind.stack(TASK_TYPES[task.type].decode(output, sizes))
            task_metrics = scalars(challenge.task_metrics(task, preds, refs, image_sizes=sizes))
            diagonal = float(np.mean([math.hypot(*size) for size in original_sizes]))
            results[task_id] = (task.type, task_metrics, diagonal)
        return results

    def __call__(self, eval_prediction) -> dict[str, float]:
        results = self.per_task(eval_prediction)
        flat = {}
        for task_id, (_, task_metrics, _) in results.items():
            flat.update(challenge.metrics_with_prefix(task_id, task_metrics))
        flat["score"] = challenge.mean_normalized_score(
            {t: r[1] for t, r in results.items()}, {t: r[0] for t, r in results.items()}, {},
            {t: r[2] for t, r in results.items()},
        )
        return flat


__all__ = ["ChallengeMetrics", "TrainerCollator", "references"]
