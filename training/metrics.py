"""The FMC_UIA challenge metrics for the four task types, trivial baselines, and paired bootstrap comparisons.

The headline figures are the ones the challenge's scorer reports, under its names, computed with the
libraries it uses (scikit-learn for classification, SimpleITK for the Hausdorff distance). Predictions and
references are per sample and in ORIGINAL image pixels. `m2dino-score` (`score.py`) applies the same
functions to a submission folder, so `m2dino-evaluate` and a scored submission agree figure for figure.

Metrics per task type
---------------------
segmentation   `segmentation_metrics(preds, refs, num_classes)`
    For every class c (background 0 included) and every image: DSC = 2|P∩R| / (|P|+|R|), 1.0 when c is
    absent from both masks; HD = the full symmetric Hausdorff distance between the two pixel sets
    (SimpleITK `HausdorffDistanceImageFilter`), 0.0 when both are empty and the image diagonal
    sqrt(H^2 + W^2) when exactly one is. Per class, the mean over images (`class_<c>_DSC`,
    `class_<c>_HD`); the task's `DSC` and `HD` are the means over the foreground classes 1..C-1.
    Extra figure: `HD95` (max of the two directed 95th percentiles of surface-to-surface distances,
    MONAI's convention, surface = pixels removed by one 4-connected erosion), same empty-mask rules.
    `per_sample_dsc`: per image, the mean over foreground classes (the bootstrap unit).
classification `classification_metrics(probs, labels, num_classes, predicted=None)`
    `Accuracy`, `F1_macro` and `F1_weighted` (`f1_score`, zero_division=0), `MCC`
    (`matthews_corrcoef`) of the predicted classes (default: argmax of `probs`); `AUC` = `roc_auc_score`
    of the class-1 probability for two classes, macro one-vs-rest otherwise, 0.0 when it raises (a
    task whose labels hold one class) or when there are no probabilities. `class_<c>_F1` per class,
    `confusion_matrix` (rows = truth), `per_sample_correct` (0/1).
detection      `detection_metrics(pred_boxes, pred_scores, ref_boxes)`, boxes (x_min, y_min, x_max, y_max)
    in pixels.
    - `IoU`: mean over images of the IoU of the top-scoring box with the ground-truth box (areas as
      given, 0.0 when the union is 0: the challenge's formula). An image with m > 1 ground-truth boxes
      (not in the challenge) scores the mean over GT boxes of the best IoU with its m top boxes; no
      prediction -> 0; no GT and no prediction -> 1, no GT but predictions -> 0.
    - Extra figure `AP50`: single-class AP at IoU >= 0.5 over all images: predictions sorted by score,
      each one greedily matched to the unmatched GT of its image with the highest IoU (COCO-style),
      all-point interpolated precision envelope (VOC 2010+). NaN when there is no GT box at all.
    - `per_sample_iou`.
regression     `regression_metrics(pred_points, ref_points, image_sizes=None)`
    `MRE`: per image the mean Euclidean (radial) distance over its points, then the mean over images;
    `point_<k>_MRE` per point; extra figures `MRE_std` (over all point errors) and, with `image_sizes`,
    `NMRE` = mean of per-image error / image diagonal. `per_sample_radial_error` (per image).
Every result also carries `num_samples`.

`task_metrics(task, predictions, references)` hands a task to its type's `metrics` (see its docstring for
the per-type input forms); the per-type choices below live in each type's module, `m2dino_training.task_types`.

Checkpoint selection
--------------------
Each type's `primary_metric` and `higher_is_better` (`m2dino_training.task_types`) name one metric per type and its direction:
segmentation `DSC` (up), classification `F1_macro` (up; chosen over accuracy because a majority-class
predictor scores a high accuracy on the challenge's imbalanced tasks but a low macro F1), detection
`IoU` (up), regression `MRE` (down).

`normalized_score` maps a task's primary metric to [0, 1], higher better:
    DSC, F1_macro, IoU                       -> the value itself (already in [0, 1])
    MRE with baseline_metrics                -> max(0, 1 - MRE / MRE_baseline)  (0 = no better than the
                                                trivial mean-landmark baseline, 1 = perfect)
    MRE with image_diagonal                  -> max(0, 1 - MRE / image_diagonal)
    MRE with `NMRE` in metrics               -> max(0, 1 - NMRE)
A NaN score counts as 0, so a diverged checkpoint never wins.
`mean_normalized_score` is the unweighted mean of these over tasks; every task weighs the same
whatever its size, as in the challenge ranking.

Baselines and significance
--------------------------
`trivial_baseline_predictions` fits a label-only predictor on the training references (see its
docstring) and `bootstrap_difference_ci` gives a paired bootstrap CI of model minus baseline on the
per-sample scores named by each type's `per_sample_key` (sign-flipped for lower-is-better, so positive = model
better).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

# The 4-connected cross: the erosion that defines a mask's surface for HD95.
_CROSS = ndimage.generate_binary_structure(2, 1)


# ----------------------------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------------------------


def _check_masks(pred: np.ndarray, ref: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.ndim != 2 or pred.shape != ref.shape:
        raise ValueError(
            f"sample {index}: prediction mask {pred.shape} and reference mask {ref.shape} must be 2-D and the same "
            "shape (predictions are compared in original image pixels)"
        )
    return pred.astype(np.int64, copy=False), ref.astype(np.int64, copy=False)


def dice_per_class(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """DSC of every class 0..C-1 (background included) for one image, from a single confusion bincount.

    Values of the prediction outside 0..C-1 belong to no class (they only enlarge no class's pixel set),
    as in the challenge scorer, which compares `pred == c` for each class c.
    """
    if ref.size and (ref.min() < 0 or ref.max() >= num_classes):
        raise ValueError(f"reference mask values must lie in [0, {num_classes - 1}]")
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)  # stray values: an extra bin
    bins = num_classes + 1
    confusion = np.bincount((pred * bins + ref).ravel(), minlength=bins * bins).reshape(bins, bins)
    intersection = np.diag(confusion)[:num_classes].astype(np.float64)
    sizes = (confusion.sum(1) + confusion.sum(0))[:num_classes].astype(np.float64)
    # A class absent from both masks was correctly predicted absent: DSC 1 (challenge convention).
    return np.divide(2 * intersection, sizes, out=np.ones_like(sizes), where=sizes > 0)


def hausdorff_distance(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """The full symmetric Hausdorff distance (pixels) between two boolean masks, as the challenge scores it.

    SimpleITK's `HausdorffDistanceImageFilter` on the two pixel sets (unit spacing). Both empty -> 0.0;
    exactly one empty -> the image diagonal sqrt(H^2 + W^2).
    """
    pred_mask, ref_mask = np.asarray(pred_mask, bool), np.asarray(ref_mask, bool)
    has_pred, has_ref = pred_mask.any(), ref_mask.any()
    if not has_pred and not has_ref:
        return 0.0
    if not (has_pred and has_ref):
        return float(np.sqrt(pred_mask.shape[0] ** 2 + pred_mask.shape[1] ** 2))
    import SimpleITK as sitk

    # The distance between two pixel sets does not change when both are shifted together, so the filter
    # runs on the union's bounding box only (same value, a fraction of the pixels).
    union = pred_mask | ref_mask
    rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    distance = sitk.HausdorffDistanceImageFilter()
    distance.SetNumberOfThreads(1)  # tiny images: threads cost more than they save
    distance.Execute(sitk.GetImageFromArray(pred_mask[window].astype(np.uint8)),
                     sitk.GetImageFromArray(ref_mask[window].astype(np.uint8)))
    return float(distance.GetHausdorffDistance())


def _surface(mask: np.ndarray) -> np.ndarray:
    # border_value=0: a structure touching the image edge has a surface along that edge.
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def hd95(pred_mask: np.ndarray, ref_mask: np.ndarray, empty_penalty: float | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance (pixels) between two boolean masks.

    Max of the two directed 95th percentiles of surface-to-surface distances. Both empty -> 0;
    one empty -> `empty_penalty` (default: the image diagonal).
    """
    pred_mask, ref_mask = np.asarray(pred_mask, bool), np.asarray(ref_mask, bool)
    has_pred, has_ref = pred_mask.any(), ref_mask.any()
    if not has_pred and not has_ref:
        return 0.0
    if not (has_pred and has_ref):
        return float(np.hypot(*pred_mask.shape)) if empty_penalty is None else float(empty_penalty)
    # Crop to the union's bounding box: everything outside is background for both masks, so the
    # surfaces and the distances between them are unchanged, and the EDT runs on far fewer pixels.
    rows = np.flatnonzero((pred_mask | ref_mask).any(1))
    cols = np.flatnonzero((pred_mask | ref_mask).any(0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    pred_surface, ref_surface = _surface(pred_mask[window]), _surface(ref_mask[window])
    # EDT of the complement = distance from every pixel to the nearest surface pixel of the other mask.
    to_ref = ndimage.distance_transform_edt(~ref_surface)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface)[ref_surface]
    return float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))


def segmentation_metrics(
    preds: Sequence[np.ndarray],
    refs: Sequence[np.ndarray],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    distances: bool = True,
) -> dict:
    """The challenge's DSC and HD (and HD95 as an extra figure), see the module docstring for conventions.

    `distances=False` leaves out HD, HD95 and their per-class and per-sample forms (surface distances are
    most of the cost; a validation pass that only selects on DSC does not need them).

    Returns `DSC`, `HD`, `HD95`, `class_<c>_DSC` and `class_<c>_HD` for every class c (background 0
    included, as the challenge reports them), `per_sample_dsc` and `per_sample_hd` (per image, mean over
    foreground classes) and `num_samples`. `class_names` is accepted for the callers' convenience; the
    challenge names classes by index.
    """
    del class_names
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predicted masks for {len(refs)} reference masks")
    if not len(refs):
        raise ValueError("no samples to score")
    if num_classes < 2:
        raise ValueError(f"a segmentation task needs a background and a foreground class, got {num_classes}")
    dsc = np.empty((len(refs), num_classes))
    hd = np.empty((len(refs), num_classes))
    distance95 = np.zeros((len(refs), num_classes - 1))
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        pred, ref = _check_masks(pred, ref, i)
        dsc[i] = dice_per_class(pred, ref, num_classes)
        if distances:
            for c in range(num_classes):
                hd[i, c] = hausdorff_distance(pred == c, ref == c)
            for c in range(1, num_classes):
                distance95[i, c - 1] = hd95(pred == c, ref == c)
    per_class_dsc, per_class_hd = dsc.mean(0), hd.mean(0)
    out = {"DSC": float(per_class_dsc[1:].mean())}
    if distances:
        out["HD"] = float(per_class_hd[1:].mean())
        out["HD95"] = float(distance95.mean(0).mean())
    for c in range(num_classes):
        out[f"class_{c}_DSC"] = float(per_class_dsc[c])
        if distances:
            out[f"class_{c}_HD"] = float(per_class_hd[c])
    out["num_samples"] = len(refs)
    out["per_sample_dsc"] = dsc[:, 1:].mean(1)
    if distances:
        out["per_sample_hd"] = hd[:, 1:].mean(1)
    return out


# ----------------------------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------------------------


def classification_auc(labels: np.ndarray, probs: np.ndarray | None, num_classes: int) -> float:
    """The challenge's AUC: scikit-learn's `roc_auc_score` of the class-1 probability for two classes,
    macro one-vs-rest over the probability rows otherwise; 0.0 when there are no probabilities or
    scikit-learn cannot compute it (one class only in the labels, rows that do not sum to 1, ...): older
    scikit-learn versions raise there, recent ones return NaN; both give 0.0."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_auc_score

    if probs is None:
        return 0.0
    try:
        probs = np.asarray(probs, np.float64)
        with warnings.catch_warnings():
            # Recent scikit-learn warns and returns NaN where older versions raised (one class in the labels).
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            if num_classes == 2:
                auc = float(roc_auc_score(labels, probs[:, 1]))
            else:
                auc = float(roc_auc_score(labels, probs, average="macro", multi_class="ovr"))
    except (ValueError, IndexError, TypeError):
        return 0.0
    return auc if math.isfinite(auc) else 0.0


def classification_metrics(
    probs: np.ndarray | None,
    labels: np.ndarray,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    predicted: np.ndarray | None = None,
) -> dict:
    """The challenge's Accuracy, AUC, F1_macro, F1_weighted and MCC (scikit-learn, zero_division 0).

    `probs` (N, C) class probabilities (None: no probabilities, AUC 0.0); a 1-D `probs` with
    `num_classes == 2` is read as the class-1 probability. `predicted` (N,): the predicted classes
    (default: the argmax of `probs`). Also returns `class_<c>_F1` per class (scikit-learn's per-class F1
    over the labels 0..C-1), `num_samples`, `confusion_matrix` (C, C; rows = truth) and
    `per_sample_correct` (N,).
    """
    from sklearn.metrics import confusion_matrix, f1_score, matthews_corrcoef

    del class_names
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.size == 0:
        raise ValueError("no samples to score")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    if probs is not None:
        probs = np.asarray(probs, np.float64)
        if probs.ndim == 1 and num_classes == 2:
            probs = np.stack([1 - probs, probs], 1)
        if probs.ndim != 2 or probs.shape != (labels.size, num_classes):
            raise ValueError(f"probs must be (N, {num_classes}) for {labels.size} labels, got {probs.shape}")
    if predicted is None:
        if probs is None:
            raise ValueError("classification metrics need the predicted classes or the probabilities")
        predicted = probs.argmax(1)
    predicted = np.asarray(predicted).astype(np.int64).ravel()
    if predicted.shape != labels.shape:
        raise ValueError(f"{predicted.size} predicted classes for {labels.size} labels")

    correct = (predicted == labels).astype(np.float64)
    out = {
        "Accuracy": float(correct.mean()),
        "AUC": classification_auc(labels, probs, num_classes),
        "F1_macro": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "F1_weighted": float(f1_score(labels, predicted, average="weighted", zero_division=0)),
        "MCC": float(matthews_corrcoef(labels, predicted)),
    }
    per_class = f1_score(labels, predicted, labels=list(range(num_classes)), average=None, zero_division=0)
    out.update({f"class_{c}_F1": float(v) for c, v in enumerate(per_class)})
    out["num_samples"] = int(labels.size)
    out["confusion_matrix"] = confusion_matrix(labels, predicted, labels=list(range(num_classes)))
    out["per_sample_correct"] = correct
    return out


# ----------------------------------------------------------------------------------------------
# detection
# ----------------------------------------------------------------------------------------------


def as_boxes(boxes) -> np.ndarray:
    boxes = np.asarray(boxes if boxes is not None else [], np.float64)
    return boxes.reshape(-1, 4)


def challenge_box_iou(pred_box, ref_box) -> float:
    """IoU of one predicted and one reference box [x_min, y_min, x_max, y_max], as the challenge scores it:
    the areas are (x_max - x_min) * (y_max - y_min) as given, and 0.0 when the union is 0."""
    px1, py1, px2, py2 = (float(v) for v in pred_box)
    rx1, ry1, rx2, ry2 = (float(v) for v in ref_box)
    intersection = max(0.0, min(px2, rx2) - max(px1, rx1)) * max(0.0, min(py2, ry2) - max(py1, ry1))
    union = (px2 - px1) * (py2 - py1) + (rx2 - rx1) * (ry2 - ry1) - intersection
    return 0.0 if union == 0 else intersection / union


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (n, m) of boxes (x_min, y_min, x_max, y_max) in continuous coordinates."""
    a, b = as_boxes(a), as_boxes(b)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _sorted_by_score(boxes, scores) -> tuple[np.ndarray, np.ndarray]:
    boxes = as_boxes(boxes)
    # Without scores the given order is the ranking (first box = most confident).
    scores = np.linspace(1, 0, len(boxes)) if scores is None else np.asarray(scores, np.float64).ravel()
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes for {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order]


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP: area under the monotone precision envelope."""
    # Envelope: best precision at this recall or any higher one.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((steps * envelope).sum())


def detection_metrics(
    pred_boxes: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray] | None,
    ref_boxes: Sequence[np.ndarray],
    iou_threshold: float = 0.5,
) -> dict:
    """Mean IoU of the top-scoring boxes and single-class AP at `iou_threshold`.

    `pred_boxes[i]` (n, 4), `pred_scores[i]` (n,) (None: boxes already ranked), `ref_boxes[i]` (m, 4)
    or (4,). Returns `IoU`, `AP50` (named for the default threshold), `num_samples` and `per_sample_iou`.
    """
    if len(pred_boxes) != len(ref_boxes):
        raise ValueError(f"{len(pred_boxes)} predictions for {len(ref_boxes)} references")
    if not len(ref_boxes):
        raise ValueError("no samples to score")
    scores_list = pred_scores if pred_scores is not None else [None] * len(pred_boxes)
    per_sample = np.empty(len(ref_boxes))
    all_scores, all_tp, n_gt = [], [], 0
    for i, (boxes, scores, refs) in enumerate(zip(pred_boxes, scores_list, ref_boxes)):
        boxes, scores = _sorted_by_score(boxes, scores)
        refs = as_boxes(refs)
        ious = box_iou(boxes, refs)  # (n_pred, n_gt), rows by decreasing score
        if len(refs) == 0:
            per_sample[i] = 1.0 if len(boxes) == 0 else 0.0
        elif len(boxes) == 0:
            per_sample[i] = 0.0
        elif len(refs) == 1:  # the challenge's case: its formula, on the top-scoring box
            per_sample[i] = challenge_box_iou(boxes[0], refs[0])
        else:
            per_sample[i] = ious[: len(refs)].max(0).mean()
        # Greedy matching by score: a prediction takes the best still-unmatched GT box above threshold.
        matched = np.zeros(len(refs), bool)
        tp = np.zeros(len(boxes), bool)
        for k in range(len(boxes)):
            candidates = np.where(matched, -1.0, ious[k])
            if len(refs) and candidates.max() >= iou_threshold:
                matched[candidates.argmax()] = True
                tp[k] = True
        all_scores.append(scores)
        all_tp.append(tp)
        n_gt += len(refs)

    scores, tp = np.concatenate(all_scores), np.concatenate(all_tp)
    order = np.argsort(-scores, kind="stable")
    cum_tp = np.cumsum(tp[order])
    cum_fp = np.cumsum(~tp[order])
    if n_gt == 0:
        ap = float("nan")
    elif len(scores) == 0:
        ap = 0.0
    else:
        ap = average_precision(cum_tp / n_gt, cum_tp / (cum_tp + cum_fp))
    return {"IoU": float(per_sample.mean()), "AP50": ap, "num_samples": len(ref_boxes), "per_sample_iou": per_sample}


# ----------------------------------------------------------------------------------------------
# regression (landmarks)
# ----------------------------------------------------------------------------------------------


def regression_metrics(
    pred_points: Sequence[np.ndarray],
    ref_points: Sequence[np.ndarray],
    point_names: Sequence[str] | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> dict:
    """Mean radial error in pixels. `pred_points[i]`, `ref_points[i]`: (P, 2) as (x, y).

    Returns `MRE`, `MRE_std` (over all point errors), `point_<k>_MRE` per point (k from 1),
    `per_sample_radial_error` (N,), `num_samples`, and with `image_sizes` ((H, W) per image) `NMRE` = mean
    of per-image error / image diagonal. `point_names` is accepted for the callers' convenience.
    """
    if len(pred_points) != len(ref_points):
        raise ValueError(f"{len(pred_points)} predictions for {len(ref_points)} references")
    if not len(ref_points):
        raise ValueError("no samples to score")
    pred = np.stack([np.asarray(p, np.float64).reshape(-1, 2) for p in pred_points])
    ref = np.stack([np.asarray(r, np.float64).reshape(-1, 2) for r in ref_points])
    if pred.shape != ref.shape:
        raise ValueError(f"predicted points {pred.shape} and reference points {ref.shape} differ")
    num_points = ref.shape[1]
    names = [str(k) for k in range(num_points)] if point_names is None else [str(n) for n in point_names]
    if len(names) != num_points:
        raise ValueError(f"{len(names)} point names for {num_points} points")
    errors = np.sqrt(((pred - ref) ** 2).sum(-1))  # (N, P), the challenge's formula
    per_sample = errors.mean(1)
    out = {"MRE": float(per_sample.mean()), "MRE_std": float(errors.std())}
    out.update({f"point_{k + 1}_MRE": float(errors[:, k].mean()) for k in range(num_points)})
    if image_sizes is not None:
        diagonals = np.hypot(*np.asarray(image_sizes, np.float64).reshape(-1, 2).T)
        if diagonals.size != per_sample.size:
            raise ValueError(f"{diagonals.size} image sizes for {per_sample.size} samples")
        out["NMRE"] = float((per_sample / diagonals).mean())
    out["num_samples"] = len(ref_points)
    out["per_sample_radial_error"] = per_sample
    return out


# ----------------------------------------------------------------------------------------------
# dispatch, aggregation, checkpoint score
# ----------------------------------------------------------------------------------------------


def split_detections(predictions) -> tuple[list, list | None]:
    """Accept [{"boxes", "scores"}] dicts, (boxes, scores) pairs, or bare (n, 4) arrays (ranked)."""
    boxes, scores = [], []
    for pred in predictions:
        if isinstance(pred, Mapping):
            boxes.append(pred["boxes"])
            scores.append(pred.get("scores"))
        elif isinstance(pred, tuple) and len(pred) == 2:
            boxes.append(pred[0])
            scores.append(pred[1])
        else:
            boxes.append(pred)
            scores.append(None)
    return boxes, scores


def task_metrics(task, predictions, references, image_sizes=None, distances: bool = True) -> dict:
    """Metrics of one task (a `TaskSpec`), dispatched on `task.type`; `distances=False`: no surface
    distances for segmentation (see `segmentation_metrics`).

    segmentation    predictions / references: lists of (H, W) integer masks; names = labels[1:]
    classification  predictions: (N, C) probabilities; references: (N,) integer labels
    detection       predictions: list of {"boxes": (n, 4), "scores": (n,)} (or (boxes, scores) pairs, or
                    ranked (n, 4) arrays); references: list of (m, 4) or (4,) boxes
    regression      predictions / references: lists of (P, 2) points; `image_sizes` adds `NMRE`
    """
    from .task_types import training_task_type

    return training_task_type(task).metrics(task, predictions, references, image_sizes=image_sizes, distances=distances)


def metrics_with_prefix(task_id: str, metrics: Mapping) -> dict[str, float]:
    """`{"<task_id>_<name>": float}` for the scalar metrics (arrays such as per-sample scores dropped),
    the flat form a Trainer `compute_metrics` returns."""

    def is_scalar(value):
        numeric = isinstance(value, (int, float, np.number, np.ndarray)) and not isinstance(value, bool)
        return numeric and np.ndim(value) == 0

    return {f"{task_id}_{name}": float(value) for name, value in metrics.items() if is_scalar(value)}


def normalized_score(
    task_type: str, metrics: Mapping, baseline_metrics: Mapping | None = None, image_diagonal: float | None = None
) -> float:
    """A task's primary metric as a higher-is-better score in [0, 1] (formula in the module docstring)."""
    from .task_types import training_task_type

    kind = training_task_type(task_type)
    value = float(metrics[kind.primary_metric])
    if kind.higher_is_better:
        score = value
    elif baseline_metrics is not None and kind.primary_metric in baseline_metrics:
        reference = float(baseline_metrics[kind.primary_metric])
        # A perfect baseline leaves nothing to normalise by: only a perfect model then scores 1.
        score = 1.0 - value / reference if reference > 0 else float(value == 0)
    else:
        score = kind.score_without_baseline(value, metrics, image_diagonal)
    return 0.0 if np.isnan(score) else float(np.clip(score, 0.0, 1.0))


def mean_normalized_score(
    per_task_metrics: Mapping[str, Mapping],
    tasks,
    baseline_metrics: Mapping[str, Mapping] | None = None,
    image_diagonals: Mapping[str, float] | None = None,
) -> float:
    """Unweighted mean of `normalized_score` over the tasks in `per_task_metrics` (task id -> metrics).

    `tasks`: TaskSpecs or a mapping task id -> type. `baseline_metrics` / `image_diagonals`: per task id.
    """
    types = dict(tasks) if isinstance(tasks, Mapping) else {t.id: t.type for t in tasks}
    if not per_task_metrics:
        raise ValueError("no task metrics to average")
    baseline_metrics, image_diagonals = baseline_metrics or {}, image_diagonals or {}
    scores = [
        normalized_score(types[task_id], metrics, baseline_metrics.get(task_id), image_diagonals.get(task_id))
        for task_id, metrics in per_task_metrics.items()
    ]
    return float(np.mean(scores))


# ----------------------------------------------------------------------------------------------
# trivial baselines
# ----------------------------------------------------------------------------------------------

def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize by index sampling at pixel centres."""
    h, w = mask.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def image_sizes_of(sizes, references, what) -> np.ndarray:
    """(N, 2) image sizes (H, W), one per reference: the baselines that place a mean box or points need them."""
    if sizes is None:
        raise ValueError(f"{what} are needed to place a mean box or mean points in each image")
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    if len(sizes) != len(references):
        raise ValueError(f"{len(sizes)} {what} for {len(references)} references")
    return sizes


def finite_numbers(value, count: int | None = None) -> list[float] | None:
    """A list of `count` (any count when None) finite numbers as floats, or None when `value` is not one."""
    if not isinstance(value, (list, tuple)) or (count is not None and len(value) != count):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return [float(v) for v in value]


def trivial_baseline_predictions(task, train_references, eval_references, train_sizes=None, eval_sizes=None):
    """Label-only predictions for `eval_references`, fitted on `train_references` alone.

    Returned in the form `task_metrics` takes:
    classification  the training class frequencies as every sample's probabilities (N, C): argmax = the
                    majority class (its accuracy), constant scores give AUC 0.5.
    segmentation    the better, by mean foreground Dice on the TRAINING masks, of the all-background mask
                    and the per-pixel majority mask (training masks resized to a 128x128 normalised grid,
                    per-pixel most frequent class, resized back to each eval mask's shape by nearest
                    neighbour). Chosen on training data so the baseline never sees eval labels.
    detection       the mean training box in normalised coordinates (divided by W, H) scaled to each
                    eval image: [{"boxes": (1, 4), "scores": (1,)}]. Needs train_sizes and eval_sizes (H, W).
    regression      the mean training points in normalised coordinates scaled to each eval image: (P, 2)
                    arrays. Needs train_sizes and eval_sizes (H, W).
    """
    from .task_types import training_task_type

    return training_task_type(task).baseline(task, train_references, eval_references, train_sizes, eval_sizes)


# ----------------------------------------------------------------------------------------------
# paired bootstrap
# ----------------------------------------------------------------------------------------------


def bootstrap_difference_ci(
    model_per_sample,
    baseline_per_sample,
    higher_is_better: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Paired percentile bootstrap of the mean per-sample difference, model minus baseline.

    The sign is flipped for lower-is-better scores so that a positive difference always means the model
    is better. Samples are resampled jointly (the pairing removes per-image difficulty from the
    variance). Returns (mean_difference, lower, upper) of the (1 - alpha) interval.
    """
    model = np.asarray(model_per_sample, np.float64).ravel()
    baseline = np.asarray(baseline_per_sample, np.float64).ravel()
    if model.shape != baseline.shape:
        raise ValueError(f"{model.size} model scores for {baseline.size} baseline scores: the samples must be paired")
    if model.size == 0:
        raise ValueError("no samples to bootstrap")
    diff = model - baseline if higher_is_better else baseline - model
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # Resample in chunks so that memory stays bounded (n_boot x n indices) on large eval sets.
    chunk = max(1, min(n_boot, 2_000_000 // diff.size))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = diff[rng.integers(0, diff.size, size=(stop - start, diff.size))].mean(1)
    lower, upper = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(diff.mean()), float(lower), float(upper)


# ----------------------------------------------------------------------------------------------
# the same metrics as a local `evaluate` module
# ----------------------------------------------------------------------------------------------


def load_challenge_metric(task_type: str, **kwargs):
    """`evaluate.load` of the challenge metrics shipped in this package (offline), configuration = task type.

    `metric.compute(predictions=..., references=..., num_classes=...)` returns the figures `task_metrics`
    gives (see `metrics_modules/fmc_uia.py` for the input forms).
    """
    import os

    import evaluate

    from .task_types import training_task_type

    training_task_type(task_type)  # a ValueError naming the known types
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics_modules", "fmc_uia.py")
    return evaluate.load(script, config_name=task_type, **kwargs)
