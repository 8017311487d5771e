"""Measurement on the training side: MAE per value (lower is better), the training mean as the trivial baseline, a
`value_<name>` CSV column per value, and a synthetic fetal head whose circumference is the value.

Figures (`metrics`): `MAE`, the mean over values of each value's mean absolute error (`<name>_MAE`); `MAE_std`,
the standard deviation of all absolute errors; `NMAE`, MAE relative to the mean absolute reference (what
normalises the score when no baseline is given); `per_sample_absolute_error`, per image the mean absolute error
over its values. The organisers-style summary (`m2dino-score`) averages `MAE` over the measurement tasks.
The submission holds one record per image in `measurement_predictions.json`: `predicted_values`, the values in
the order of the task's `labels`.
"""

from __future__ import annotations

import math

import numpy as np

from modeling_m2dino.measurement import MeasurementType

from .base import TrainingTaskType

FIELD_OF_VIEW_MM = 200.0  # the synthetic images' width in millimetres: values in mm whatever the image size


def measurement_metrics(predictions, references, value_names) -> dict:
    """MAE per value and over values (see the module docstring); predictions and references (N, V)."""
    predicted = np.asarray(predictions, np.float64).reshape(len(references), -1)
    reference = np.asarray(references, np.float64).reshape(len(references), -1)
    if predicted.shape != reference.shape or predicted.shape[1] != len(value_names):
        raise ValueError(f"{predicted.shape} predictions for {reference.shape} references of {len(value_names)} values")
    errors = np.abs(predicted - reference)
    per_value = errors.mean(0) if len(errors) else np.full(len(value_names), np.nan)
    result = {f"{name}_MAE": float(value) for name, value in zip(value_names, per_value)}
    scale = float(np.abs(reference).mean()) if len(reference) else float("nan")
    result.update(MAE=float(per_value.mean()), MAE_std=float(errors.std()) if errors.size else float("nan"),
                  NMAE=float(per_value.mean() / scale) if scale > 0 else float("nan"),
                  per_sample_absolute_error=errors.mean(1), num_samples=len(errors))
    return result


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's approximation of the perimeter of an ellipse with semi-axes a and b."""
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def head_circumference_scene(canvas, class_name=None) -> dict:
    """An obstetric scene with one fetal head, of a wide range of sizes; its geometry is the skull's outer
    circumference in mm (`head_circumference_mm`)."""
    from ..data.synthetic import scenes

    scenes.obstetric_scene(canvas)
    a = canvas.uni(0.12, 0.30)
    cx, cy = canvas.place(a, yr=(0.42, 0.65))
    b = a * canvas.uni(0.74, 0.88)
    scenes.skull(canvas, cx, cy, a, b, canvas.uni(0, math.pi))
    return {"head_circumference_mm": ellipse_perimeter(a, b) * FIELD_OF_VIEW_MM}


class MeasurementTraining(TrainingTaskType):
    model_type = MeasurementType
    primary_metric = "MAE"
    higher_is_better = False
    per_sample_key = "per_sample_absolute_error"
    challenge_figures = ("MAE",)
    extra_figures = ("MAE_std",)
    prediction_file = "measurement_predictions.json"
    record_fields = ("image_path", "task_id", "predicted_values")
    pipeline_tag = "other"  # the Hub has no image-regression pipeline
    auto_class = "AutoModel"
    count_nouns = ("value", "values")
    colour = "tab:purple"
    allows_zoom = False  # a zoom would change every size in the image but not its label
    example_features = {"values": lambda datasets: datasets.Sequence(datasets.Value("float32"))}
    stored_columns = {"values": lambda datasets: datasets.List(datasets.Value("float64"))}
    label_arrays = {"values": (np.float32, None)}

    @staticmethod
    def metrics(task, predictions, references, image_sizes=None, distances: bool = True) -> dict:
        return measurement_metrics(predictions, references, task.labels)

    @staticmethod
    def metric_features(datasets) -> dict:
        values = datasets.Sequence(datasets.Value("float64"))
        return {"predictions": values, "references": values}

    @staticmethod
    def metric_values(predictions, references, value_names=None) -> dict:
        """The values (V,) of each image; `value_names` name them in the figures (default value_1, value_2, ...)."""
        count = len(references[0]) if len(references) else 0
        return measurement_metrics(predictions, references, value_names or [f"value_{k + 1}" for k in range(count)])

    @classmethod
    def score_without_baseline(cls, value: float, metrics, image_diagonal: float | None) -> float:
        """1 - NMAE: the error relative to the size of the values."""
        return 1.0 - float(metrics["NMAE"])

    @staticmethod
    def baseline(task, train_references, eval_references, train_sizes=None, eval_sizes=None):
        """The mean of the training values, for every eval image."""
        mean = np.asarray(train_references, np.float64).reshape(len(train_references), -1).mean(0)
        return [mean.copy() for _ in eval_references]

    fits_head = True

    @staticmethod
    def fit_head(head, task, train_examples: list[dict]):
        """The head's standardisation: the training values' mean and standard deviation."""
        if not train_examples:
            raise ValueError(f"task {task.id!r}: a measurement head needs training values to standardise them")
        values = np.stack([MeasurementType.reference(example) for example in train_examples]).astype(np.float64)
        head.set_value_statistics(values.mean(0), values.std(0) if len(values) > 1 else np.ones(values.shape[1]))

    @staticmethod
    def layout_references(task, labels, positions, original_sizes):
        return [np.asarray(labels["values"])[i, : len(task.labels)].astype(np.float32) for i in positions]

    @staticmethod
    def prediction_record(task, prediction) -> dict:
        return {"predicted_values": [float(v) for v in np.asarray(prediction).reshape(-1)]}

    @staticmethod
    def record_value(spec, record: dict, what: str, report):
        from .. import metrics as challenge

        values = challenge.finite_numbers(record["predicted_values"], len(spec.labels))
        if values is None:
            report.problem(f"{what}: predicted_values is not a list of {len(spec.labels)} numbers "
                           f"({', '.join(spec.labels)})")
            return None
        return np.asarray(values)

    @staticmethod
    def csv_reference(row, spec, data_root: str):
        return np.asarray([float(row.cell(f"value_{name}")) for name in spec.labels], np.float64)

    @classmethod
    def score_result(cls, spec, predictions, references, report) -> dict:
        values = measurement_metrics(predictions, references, spec.labels)
        result = cls.scored_figures(values)
        result.update({f"{name}_MAE": values[f"{name}_MAE"] for name in spec.labels})
        return result

    @staticmethod
    def csv_columns(spec) -> tuple[str, ...]:
        return tuple(f"value_{name}" for name in spec.labels)

    @staticmethod
    def parse_csv_labels(row, spec, cells) -> dict:
        return {"values": [cells.parse_number(row, f"value_{name}") for name in spec.labels]}

    @staticmethod
    def label_difference(first, second, first_digest, second_digest):
        if first["values"] != second["values"]:
            return "values", f"values {second['values']} here, {first['values']} there"
        return None

    @staticmethod
    def check_folder_labels(value, spec, image_info, checks) -> tuple:
        values = checks.matrix([value("values")], len(spec.labels), "values")[0]
        _, _, digest = image_info()  # readable?
        return digest, ("values", values.tolist())

    # ---- the synthetic suite ---------------------------------------------------------------------------------

    synthetic_train_size = 300

    @staticmethod
    def synthetic_scene(spec) -> tuple:
        return head_circumference_scene, "convex"

    @staticmethod
    def synthetic_labels(spec, scene, mask, geometry, field_of_view, size) -> dict:
        missing = [name for name in spec.labels if name not in geometry]
        if missing:
            raise ValueError(f"task {spec.id!r}: the synthetic scene measures {sorted(geometry)}, not {missing}")
        return {"values": np.asarray([geometry[name] for name in spec.labels], np.float32)}

    @staticmethod
    def layout_folder(spec) -> str:
        return f"Measurement/{spec.id}"

    @staticmethod
    def layout_cells(spec, example, folder, index, save_file) -> dict:
        return {f"value_{name}": repr(float(v)) for name, v in zip(spec.labels, example["values"])}
