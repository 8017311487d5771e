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

PADDING_VALUE = -100  # the Trainer's own padding index, so its padding and ours read the same

LABEL_KEYS = {
    "segmentation": ("masks",),
    "classification": ("class_labels",),
    "detection": ("boxes", "box_labels"),
    "regression": ("points",),
}


def served_types(specs) -> list[str]:
    return sorted({task.type for task in specs}, key=list(LABEL_KEYS).index)


def batch_labels(labels: list[dict], task_indices, specs, image_size: tuple[int, int], original_sizes=None) -> dict:
    """Per-sample label dicts (the forms `M2DinoForMultiTask` documents) -> the fixed-layout dict above.

    `task_indices` gives each sample's index into `specs` (the model's task list); the keys are those of every
    type in `specs`, whether or not this batch holds a sample of it."""
    batch_size = len(labels)
    task_indices = torch.as_tensor(task_indices, dtype=torch.long).reshape(-1)
    if task_indices.numel() != batch_size:
        raise ValueError(f"batch_labels: {batch_size} labels but {task_indices.numel()} task indices")
    types = served_types(specs)
    out = {"task_ids": task_indices}
    if original_sizes is not None:
        out["original_sizes"] = torch.as_tensor(np.asarray(original_sizes), dtype=torch.long).reshape(batch_size, 2)
    if "classification" in types:
        out["class_labels"] = torch.full((batch_size,), PADDING_VALUE, dtype=torch.long)
    if "segmentation" in types:
        out["masks"] = torch.full((batch_size, *image_size), PADDING_VALUE, dtype=torch.int32)
    box_slots = max([len(np.asarray(l["boxes"]).reshape(-1, 4)) for l in labels if "boxes" in l] + [1])
    if "detection" in types:
        out["boxes"] = torch.full((batch_size, box_slots, 4), float(PADDING_VALUE))
        out["box_labels"] = torch.full((batch_size, box_slots), PADDING_VALUE, dtype=torch.long)
    if "regression" in types:
        point_slots = max(t.num_points for t in specs if t.type == "regression")
        out["points"] = torch.full((batch_size, point_slots, 2), float(PADDING_VALUE))
    for row, (label, index) in enumerate(zip(labels, task_indices.tolist())):
        task = specs[index]
        if task.type == "classification":
            out["class_labels"][row] = int(torch.as_tensor(label["class_labels"]).reshape(-1)[0])
        elif task.type == "segmentation":
            mask = torch.as_tensor(np.asarray(label["mask"]))
            if tuple(mask.shape) != tuple(image_size):
                raise ValueError(f"sample {row} (task {task.id!r}): mask {tuple(mask.shape)} is not at the processed size {image_size}")
            out["masks"][row] = mask.to(torch.int32)
        elif task.type == "detection":
            boxes = torch.as_tensor(np.asarray(label["boxes"]), dtype=torch.float32).reshape(-1, 4)
            out["boxes"][row, : len(boxes)] = boxes
            out["box_labels"][row, : len(boxes)] = torch.as_tensor(np.asarray(label["class_labels"])).long().reshape(-1)
        else:
            points = torch.as_tensor(np.asarray(label["points"]), dtype=torch.float32).reshape(-1, 2)
            out["points"][row, : len(points)] = points
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
        keys = LABEL_KEYS[task.type]
        missing = [k for k in keys if k not in labels]
        if missing:
            raise ValueError(f"sample {row} (task {task.id!r}, {task.type}): labels lack {missing}")
        if task.type == "classification":
            per_sample.append({"class_labels": labels["class_labels"][row]})
        elif task.type == "segmentation":
            per_sample.append({"mask": labels["masks"][row].long()})
        elif task.type == "detection":
            present = labels["box_labels"][row] != PADDING_VALUE
            per_sample.append({"class_labels": labels["box_labels"][row][present], "boxes": labels["boxes"][row][present]})
        else:
            per_sample.append({"points": labels["points"][row, : task.num_points]})
    return per_sample


def output_fields(impl) -> tuple[str, ...]:
    return (impl.output_field,) if isinstance(impl.output_field, str) else tuple(impl.output_field)


def per_sample_predictions(task_outputs: dict, task_indices: torch.Tensor, specs, impls, layout: dict, dtype) -> dict:
    """Per-task head outputs (each with `indices`, its samples' batch positions) -> the fixed-layout dict.

    `layout` maps `<type>_<field>` to the per-sample shape every row is padded to (see `prediction_layout`)."""
    batch_size = task_indices.shape[0]
    predictions = {"task_ids": task_indices}
    for key, shape in layout.items():
        predictions[key] = torch.full((batch_size, *shape), float(PADDING_VALUE), dtype=dtype, device=task_indices.device)
    by_id = {task.id: task for task in specs}
    for task_id, output in task_outputs.items():
        task = by_id[task_id]
        for field in output_fields(impls[task.type]):
            values = output[field].detach()
            region = (output["indices"],) + tuple(slice(0, size) for size in values.shape[1:])
            predictions[f"{task.type}_{field}"][region] = values.to(dtype)
    return predictions


def prediction_layout(specs, impls, config, image_size: tuple[int, int]) -> dict:
    """`<type>_<field>` -> the per-sample shape its rows are padded to: per dimension the largest over the tasks
    of that type, from each type's `output_shapes` for this image size."""
    layout = {}
    for task in specs:
        for field, shape in impls[task.type].output_shapes(config, task, image_size).items():
            key = f"{task.type}_{field}"
            layout[key] = tuple(max(a, b) for a, b in zip(layout.get(key, shape), shape))
    return layout


# The dimension (of a batched field) that counts classes or points, and that count for a task; other fields and
# dimensions (queries, spatial sizes) are the same for every task of the type.
SLOT_DIMENSIONS = {
    ("segmentation", "logits"): (1, lambda task: task.num_classes),
    ("classification", "logits"): (1, lambda task: task.num_classes),
    ("detection", "logits"): (2, lambda task: task.num_classes + 1),
    ("regression", "keypoints"): (1, lambda task: task.num_points),
    ("regression", "heatmaps"): (1, lambda task: task.num_points),
}


def outputs_by_task(predictions: Mapping, specs, impls) -> dict:
    """A (gathered) predictions dict -> task id -> (positions of its samples, its head's output object with
    every field cut to the task's own class or point count). Takes numpy arrays (what `compute_metrics`
    receives) or tensors."""
    task_indices = np.asarray(predictions["task_ids"]).reshape(-1)
    results = {}
    for index in sorted(set(task_indices.tolist())):
        task = specs[index]
        impl = impls[task.type]
        positions = np.flatnonzero(task_indices == index)
        fields = {}
        for field in output_fields(impl):
            values = torch.as_tensor(np.asarray(predictions[f"{task.type}_{field}"])[positions])
            if (task.type, field) in SLOT_DIMENSIONS:
                dimension, size = SLOT_DIMENSIONS[task.type, field]
                values = values.narrow(dimension, 0, size(task))
            fields[field] = values
        results[task.id] = (positions, impl.output_class(**fields))
    return results


__all__ = [
    "LABEL_KEYS",
    "PADDING_VALUE",
    "batch_labels",
    "outputs_by_task",
    "per_sample_predictions",
    "prediction_layout",
    "unbatch_labels",
]
