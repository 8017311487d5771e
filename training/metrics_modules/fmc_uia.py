"""The FMC_UIA challenge metrics as a local `evaluate` module (loads offline, ships with m2dino).

    from m2dino_training.metrics import load_challenge_metric
    metric = load_challenge_metric("classification")      # configuration: any task type
    metric.compute(predictions=probs, references=labels, num_classes=3)

The figures are `m2dino_training.metrics.task_metrics`'s (the organisers' names: DSC and HD, Accuracy, AUC,
F1_macro, F1_weighted, MCC, IoU, MRE, MAE, with per-class figures and the extras HD95 / AP50 / MRE_std), so a
`Trainer(compute_metrics=...)` built on this module reports the challenge's numbers.

A configuration per task type of `m2dino_training.task_types`: its inputs (one sample per row, original-image
pixels) are the type's `metric_features`, its options and figures its `metric_values`':
    segmentation    predictions, references: (H, W) class-index masks; `num_classes` (background included)
    classification  predictions: class probabilities (C,); references: class index; `num_classes`
    detection       predictions: the predicted box [x_min, y_min, x_max, y_max] (the top one);
                    references: the ground-truth box
    regression      predictions, references: points [[x, y], ...]
    measurement     predictions, references: the values (V,); `value_names` optional
"""

import datasets
import evaluate
import numpy as np

from m2dino_training.task_types import TRAINING_TASK_TYPES


def _scalars(values: dict) -> dict:
    return {name: value for name, value in values.items() if np.ndim(value) == 0}


@evaluate.utils.file_utils.add_start_docstrings(__doc__)
class FmcUia(evaluate.Metric):
    def _info(self):
        if self.config_name not in TRAINING_TASK_TYPES:
            raise ValueError(f"configuration {self.config_name!r}: one of {', '.join(TRAINING_TASK_TYPES)}")
        return evaluate.MetricInfo(
            description="FMC_UIA challenge metrics (the organisers' definitions and names)",
            citation="",
            inputs_description=__doc__,
            features=datasets.Features(TRAINING_TASK_TYPES[self.config_name].metric_features(datasets)),
        )

    def _compute(self, predictions, references, **options):
        return _scalars(TRAINING_TASK_TYPES[self.config_name].metric_values(predictions, references, **options))
