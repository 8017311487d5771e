"""Landmark regression on the training side: the challenge's MRE (lower is better), the mean-points baseline."""

from __future__ import annotations

import json

import numpy as np

from modeling_m2dino.regression import RegressionType

from .. import metrics as challenge
from .base import TrainingTaskType


class RegressionTraining(TrainingTaskType):
    model_type = RegressionType
    primary_metric = "MRE"
    higher_is_better = False
    per_sample_key = "per_sample_radial_error"
    challenge_figures = ("MRE",)
    extra_figures = ("MRE_std",)
    prediction_file = "regression_predictions.json"
    record_fields = ("image_path", "task_id", "predicted_points_pixels")
    pipeline_tag = "keypoint-detection"
    auto_class = "AutoModelForKeypointDetection"
    count_nouns = ("point", "points")
    colour = "tab:red"
    example_features = {"points": lambda datasets: datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=2))}
    stored_columns = {"points": lambda datasets: datasets.List(datasets.List(datasets.Value("float64")))}
    label_arrays = {"points": (np.float32, (-1, 2))}

    @staticmethod
    def metrics(task, predictions, references, image_sizes=None, distances: bool = True) -> dict:
        return challenge.regression_metrics(predictions, references, point_names=task.labels, image_sizes=image_sizes)

    @staticmethod
    def metric_features(datasets) -> dict:
        points = datasets.Sequence(datasets.Sequence(datasets.Value("float64")))
        return {"predictions": points, "references": points}

    @staticmethod
    def metric_values(predictions, references) -> dict:
        """Points [[x, y], ...] in original-image pixels."""
        return challenge.regression_metrics([np.asarray(p, np.float64) for p in predictions],
                                            [np.asarray(r, np.float64) for r in references])

    @classmethod
    def score_without_baseline(cls, value: float, metrics, image_diagonal: float | None) -> float:
        """1 - MRE / image diagonal, or 1 - NMRE when the metrics hold it."""
        if image_diagonal is not None:
            return 1.0 - value / float(image_diagonal)
        if "NMRE" in metrics:
            return 1.0 - float(metrics["NMRE"])
        raise ValueError(
            f"a {cls.name()} score needs baseline_metrics, image_diagonal or `NMRE` in the metrics to be normalised"
        )

    @staticmethod
    def baseline(task, train_references, eval_references, train_sizes=None, eval_sizes=None):
        """The mean training points in normalised coordinates scaled to each eval image: (P, 2) arrays. Needs
        train_sizes and eval_sizes (H, W)."""
        train_hw = challenge.image_sizes_of(train_sizes, train_references, "train_sizes")
        eval_hw = challenge.image_sizes_of(eval_sizes, eval_references, "eval_sizes")
        points = np.stack([np.asarray(p, np.float64).reshape(-1, 2) for p in train_references])  # (N, P, 2)
        mean_points = (points / train_hw[:, None, ::-1]).mean(0)  # x / W, y / H
        return [mean_points * wh for wh in eval_hw[:, None, ::-1]]

    @staticmethod
    def layout_references(task, labels, positions, original_sizes):
        points = np.asarray(labels["points"])[positions, : task.num_points].astype(np.float64)
        return [(p * np.array([width, height])).astype(np.float32) for p, (height, width) in zip(points, original_sizes)]

    @staticmethod
    def prediction_record(task, prediction) -> dict:
        return {"predicted_points_pixels": [float(v) for v in np.asarray(prediction).reshape(-1)]}

    @staticmethod
    def record_value(spec, record: dict, what: str, report):
        points = challenge.finite_numbers(record["predicted_points_pixels"])
        if points is None or len(points) != 2 * spec.num_points:
            report.problem(f"{what}: predicted_points_pixels is not a list of {2 * spec.num_points} numbers "
                           f"(x1, y1, ... for the task's {spec.num_points} points)")
            return None
        return np.asarray(points).reshape(-1, 2)

    @staticmethod
    def csv_reference(row, spec, data_root: str):
        points = []
        for k in range(1, spec.num_points + 1):
            text = row.cell(f"point_{k}_xy")
            # As the challenge does: a missing ground-truth point counts as (0, 0).
            points.append(json.loads(text) if text else [0.0, 0.0])
        return np.asarray(points, np.float64).reshape(-1, 2)

    @classmethod
    def score_result(cls, spec, predictions, references, report) -> dict:
        values = challenge.regression_metrics(predictions, references)
        result = cls.scored_figures(values)
        result.update({f"point_{k}_MRE": values[f"point_{k}_MRE"] for k in range(1, spec.num_points + 1)})
        return result

    @staticmethod
    def parse_csv_labels(row, spec, cells) -> dict:
        points = [cells.parse_point(row, f"point_{k}_xy") for k in range(1, spec.num_points + 1)]
        extra = f"point_{spec.num_points + 1}_xy"
        if row.cell(extra, required=False) is not None:
            raise cells.RowProblem(extra, f"task '{spec.id}' has {spec.num_points} points but this cell holds another one")
        return {"points": points}

    @staticmethod
    def check_in_image(values, spec, width, height, checks):
        found = checks.point_problem(values["points"], width, height)
        if found:
            raise checks.RowProblem(f"point_{found[0] + 1}_xy", found[1])
        return None

    @staticmethod
    def label_difference(first, second, first_digest, second_digest):
        a, b = first, second
        if a["points"] != b["points"]:
            index = next(k for k, (x, y) in enumerate(zip(a["points"], b["points"])) if x != y)
            return f"point_{index + 1}_xy", f"points {b['points']} here, {a['points']} there"
        return None

    @staticmethod
    def synthetic_labels(spec, scene, mask, geometry, field_of_view, size) -> dict:
        return {"points": (np.array([geometry[p] for p in scene.points], np.float64) * size).astype(np.float32)}

    @staticmethod
    def layout_folder(spec) -> str:
        return f"Regression/{spec.id}"

    @staticmethod
    def layout_cells(spec, example, folder, index, save_file) -> dict:
        # repr of float32-as-double round-trips exactly
        return {f"point_{p + 1}_xy": json.dumps([float(x), float(y)]) for p, (x, y) in enumerate(example["points"])}

    @staticmethod
    def check_folder_labels(value, spec, image_info, checks) -> tuple:
        width, height, digest = image_info()
        points = checks.matrix(value("points"), 2, "points")
        if len(points) != spec.num_points:
            raise checks.RowProblem("points", f"{len(points)} points, but task '{spec.id}' has {spec.num_points}")
        found = checks.point_problem([(float(x), float(y)) for x, y in points], width, height)
        if found:
            raise checks.RowProblem("points", f"point {found[0]}: {found[1]}")
        return digest, ("points", points.tolist())
