"""Per-sample, fixed-layout forms of M2DINO's labels and predictions, for `transformers.Trainer` evaluation.

The Trainer gathers what a model returns batch by batch (and process by process) by concatenating tensors along
the first dimension, padding the second with -100 where sizes differ. A mixed-task batch's natural forms (a list
of per-sample label dicts, a dict of per-task outputs whose keys depend on the batch) do not survive that: lists
are paired element by element across batches and missing keys fail. The forms here do: dicts whose keys depend
only on the model's task list, of tensors with one row per sample in batch order and trailing sizes fixed by the
task list and the image size.

Labels (what `M2DinoForMultiTask` and the single-type classes accept as `labels`, beside their per-sample forms):
    `task_ids` (B,) the index of each sample's task in `config.tasks`; `original_sizes` (B, 2) (height, width);
    and for the task types the model serves: `class_labels` (B,) classification; `masks` (B, H, W) int32 at the
    processed size; `boxes` (B, N, 4) normalised (cx, cy, w, h) with `box_labels` (B, N); `points` (B, P, 2)
    normalised (x, y). Rows of samples of another type, and box or point slots a sample does not have, hold -100.

Predictions (`M2DinoMultiTaskOutput.predictions`, in eval mode):
    `task_ids` (B,) and, per task type served and per field of that type's head output, `<type>_<field>`:
    `segmentation_logits` (B, C, H/4, W/4), `classification_logits` (B, C), `detection_logits` (B, Q, C + 1),
    `detection_pred_boxes` (B, Q, 4), `detection_attention_maps` (B, Q, H/16, W/16), `regression_keypoints`
    (B, P, 2), `regression_heatmaps` (B, P, h, w). C and P are the largest class / point count among the model's
    tasks of that type; a sample's own values fill the leading `num_classes` (detection: `num_classes + 1`, its
    "no object" logit last) or `num_points` slots, the rest and other types' rows hold -100.
`outputs_by_task` turns a gathered dict back into per-task head outputs.
"""

from collections.abc import Mapping

import numpy as np
import torch

from .task_types import PADDING_VALUE, TASK_TYPES


def served_types(specs) -> list[str]:
    """The types of `specs`, in the registry's order."""
    present = {task.type for task in specs}
    return [name for name in TASK_TYPES if name in present]


def batch_labels(labels: list[dict], task_indices, specs, image_size: tuple[int, int], original_sizes=None) -> dict:
    """Per-sample label dicts (the forms `M2DinoForMultiTask` documents) -> the fixed-layout dict above.

    `task_indices` gives each sample's index into `specs` (the model's task list); the keys are those of every
    type in `specs`, whether or not this batch holds a sample of it."""
    batch_size = len(labels)
    task_indices = torch.as_tensor(task_indices, dtype=torch.long).reshape(-1)
    if task_indices.numel() != batch_size:
        raise ValueError(f"batch_labels: {batch_size} labels but {task_indices.numel()} task indices")
    out = {"task_ids": task_indices}
    if original_sizes is not None:
        out["original_sizes"] = torch.as_tensor(np.asarray(original_sizes), dtype=torch.long).reshape(batch_size, 2)
    for name in served_types(specs):
        of_type = [task for task in specs if task.type == name]
        out.update(TASK_TYPES[name].empty_labels(batch_size, of_type, labels, image_size))
    for row, (label, index) in enumerate(zip(labels, task_indices.tolist())):
        task = specs[index]
        TASK_TYPES[task.type].fill_labels(out, row, label, task, image_size)
    return out


def unbatch_labels(labels: Mapping, specs, task_indices: torch.Tensor) -> list[dict]:
    """The fixed-layout dict -> one label dict per sample, checking that its `task_ids` match the call's tasks."""
    given = labels.get("task_ids")
    if given is None:
        raise ValueError("labels given as a dict need 'task_ids' (see modeling_m2dino.per_sample)")
    given = torch.as_tensor(given, device=task_indices.device).long().reshape(-1)
    if given.shape != task_indices.shape or not torch.equal(given, task_indices):
        raise ValueError(
            f"labels['task_ids'] {given.tolist()} do not match the tasks of the call {task_indices.tolist()}"
        )
    per_sample = []
    for row, index in enumerate(task_indices.tolist()):
        task = specs[index]
        task_type = TASK_TYPES[task.type]
        missing = [k for k in task_type.label_keys if k not in labels]
        if missing:
            raise ValueError(f"sample {row} (task {task.id!r}, {task.type}): labels lack {missing}")
        per_sample.append(task_type.sample_labels(labels, row, task))
    return per_sample


def per_sample_predictions(task_outputs: dict, task_indices: torch.Tensor, specs, layout: dict, dtype) -> dict:
    """Per-task head outputs (each with `indices`, its samples' batch positions) -> the fixed-layout dict.

    `layout` maps `<type>_<field>` to the per-sample shape every row is padded to (see `prediction_layout`)."""
    batch_size = task_indices.shape[0]
    predictions = {"task_ids": task_indices}
    for key, shape in layout.items():
        predictions[key] = torch.full((batch_size, *shape), float(PADDING_VALUE), dtype=dtype, device=task_indices.device)
    by_id = {task.id: task for task in specs}
    for task_id, output in task_outputs.items():
        task = by_id[task_id]
        for field in TASK_TYPES[task.type].output_fields:
            values = output[field].detach()
            region = (output["indices"],) + tuple(slice(0, size) for size in values.shape[1:])
            predictions[f"{task.type}_{field}"][region] = values.to(dtype)
    return predictions


def prediction_layout(specs, config, image_size: tuple[int, int]) -> dict:
    """`<type>_<field>` -> the per-sample shape its rows are padded to: per dimension the largest over the tasks
    of that type, from each type's `output_shapes` for this image size."""
    layout = {}
    for task in specs:
        for field, shape in TASK_TYPES[task.type].output_shapes(config, task, image_size).items():
            key = f"{task.type}_{field}"
            layout[key] = tuple(max(a, b) for a, b in zip(layout.get(key, shape), shape))
    return layout


def outputs_by_task(predictions: Mapping, specs) -> dict:
    """A (gathered) predictions dict -> task id -> (positions of its samples, its head's output object with
    every field cut to the task's own output count, by the type's `slot_dimensions`). Takes numpy arrays (what
    `compute_metrics` receives) or tensors."""
    task_indices = np.asarray(predictions["task_ids"]).reshape(-1)
    results = {}
    for index in sorted(set(task_indices.tolist())):
        task = specs[index]
        task_type = TASK_TYPES[task.type]
        positions = np.flatnonzero(task_indices == index)
        fields = {}
        for field in task_type.output_fields:
            values = torch.as_tensor(np.asarray(predictions[f"{task.type}_{field}"])[positions])
            if field in task_type.slot_dimensions:
                dimension, size = task_type.slot_dimensions[field]
                values = values.narrow(dimension, 0, size(task))
            fields[field] = values
        results[task.id] = (positions, task_type.output_class(**fields))
    return results


__all__ = [
    "PADDING_VALUE",
    "batch_labels",
    "outputs_by_task",
    "per_sample_predictions",
    "prediction_layout",
    "unbatch_labels",
]
