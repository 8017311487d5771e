"""The FMC_UIA challenge metrics as a local `evaluate` module (loads offline, ships with m2dino).

    from m2dino_training.metrics import load_challenge_metric
    metric = load_challenge_metric("classification")      # or segmentation / detection / regression
    metric.compute(predictions=probs, references=labels, num_classes=3)

The figures are `m2dino_training.metrics.task_metrics`'s (the organisers' names: DSC and HD, Accuracy, AUC,
F1_macro, F1_weighted, MCC, IoU, MRE, with per-class figures and the extras HD95 / AP50 / MRE_std), so a
`Trainer(compute_metrics=...)` built on this module reports the challenge's numbers.

Inputs per configuration (one sample per row, original-image pixels):
    segmentation    predictions, references: (H, W) class-index masks; `num_classes` (background included)
    classification  predictions: class probabilities (C,); references: class index; `num_classes`
    detection       predictions: the predicted box [x_min, y_min, x_max, y_max] (the top one);
                    references: the ground-truth box
    regression      predictions, references: points [[x, y], ...]
"""

import datasets
import evaluate
import numpy as np

from m2dino_training.metrics import (
    classification_metrics,
    detection_metrics,
    regression_metrics,
    segmentation_metrics,
)

_FEATURES = {
    "segmentation": datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                                       "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64")))}),
    "classification": datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                         "references": datasets.Value("int64")}),
    "detection": datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                    "references": datasets.Sequence(datasets.Value("float64"))}),
    "regression": datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                                     "references": datasets.Sequence(datasets.Sequence(datasets.Value("float64")))}),
}


def _scalars(values: dict) -> dict:
    return {name: value for name, value in values.items() if np.ndim(value) == 0}


@evaluate.utils.file_utils.add_start_docstrings(__doc__)
class FmcUia(evaluate.Metric):
    def _info(self):
        if self.config_name not in _FEATURES:
            raise ValueError(f"configuration {self.config_name!r}: one of {', '.join(_FEATURES)}")
        return evaluate.MetricInfo(
            description="FMC_UIA challenge metrics (the organisers' definitions and names)",
            citation="",
            inputs_description=__doc__,
            features=_FEATURES[self.config_name],
        )

    def _compute(self, predictions, references, num_classes=None):
        kind = self.config_name
        if kind in ("segmentation", "classification") and num_classes is None:
            raise ValueError(f"{kind}: pass num_classes (background included for segmentation)")
        if kind == "segmentation":
            values = segmentation_metrics([np.asarray(p) for p in predictions], [np.asarray(r) for r in references],
                                          num_classes)
        elif kind == "classification":
            values = classification_metrics(np.asarray(predictions, np.float64), np.asarray(references), num_classes)
        elif kind == "detection":
            values = detection_metrics([np.asarray(p, np.float64)[None] for p in predictions], None,
                                       [np.asarray(r, np.float64) for r in references])
        else:
            values = regression_metrics([np.asarray(p, np.float64) for p in predictions],
                                        [np.asarray(r, np.float64) for r in references])
        return _scalars(values)
