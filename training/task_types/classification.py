"""Classification on the training side: the challenge's five figures on F1_macro, the class-frequency baseline."""

from __future__ import annotations

import numpy as np

from modeling_m2dino.classification import ClassificationType

from .. import metrics as challenge
from .base import TrainingTaskType


class ClassificationTraining(TrainingTaskType):
    model_type = ClassificationType
    # F1_macro rather than accuracy: a majority-class predictor scores a high accuracy on the challenge's
    # imbalanced tasks but a low macro F1.
    primary_metric = "F1_macro"
    per_sample_key = "per_sample_correct"
    challenge_figures = ("Accuracy", "AUC", "F1_macro", "F1_weighted", "MCC")
    prediction_file = "classification_predictions.json"
    record_fields = ("image_path", "task_id", "predicted_class")
    pipeline_tag = "image-classification"
    auto_class = "AutoModelForImageClassification"
    scores_per_class = True
    colour = "tab:orange"
    class_per_image = True
    example_features = {"label": lambda datasets: datasets.Value("int64")}
    stored_columns = {"label": lambda datasets: datasets.Value("int64")}

    @staticmethod
    def metrics(task, predictions, references, image_sizes=None, distances: bool = True) -> dict:
        return challenge.classification_metrics(predictions, references, task.num_classes, class_names=task.labels)

    @staticmethod
    def metric_features(datasets) -> dict:
        return {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}

    @classmethod
    def metric_values(cls, predictions, references, num_classes=None) -> dict:
        """Predictions: class probabilities (C,); references: class indices."""
        if num_classes is None:
            raise ValueError(f"{cls.name()}: pass num_classes")
        return challenge.classification_metrics(np.asarray(predictions, np.float64), np.asarray(references), num_classes)

    @staticmethod
    def baseline(task, train_references, eval_references, train_sizes=None, eval_sizes=None):
        """The training class frequencies as every sample's probabilities (N, C): argmax = the majority class (its
        accuracy), constant scores give AUC 0.5."""
        labels = np.asarray(train_references, np.int64).ravel()
        freq = np.bincount(labels, minlength=task.num_classes)[: task.num_classes].astype(np.float64)
        freq /= freq.sum()
        return np.tile(freq, (len(eval_references), 1))

    @staticmethod
    def stack(values: list):
        """(N, C) probabilities, or (N,) class indices."""
        return np.stack(values) if len(values) and np.ndim(values[0]) else np.asarray(values)

    @staticmethod
    def layout_references(task, labels, positions, original_sizes):
        return np.asarray(labels["class_labels"])[positions].astype(np.int64)

    @staticmethod
    def prediction_record(task, prediction) -> dict:
        return {"predicted_class": int(np.argmax(prediction)), "predicted_probs": [float(p) for p in prediction]}

    @staticmethod
    def record_value(spec, record: dict, what: str, report):
        predicted = record["predicted_class"]
        if isinstance(predicted, bool) or not isinstance(predicted, (int, float)) or not float(predicted).is_integer():
            report.problem(f"{what}: predicted_class {predicted!r} is not an integer")
            return None
        probs = record.get("predicted_probs")
        if probs is not None and challenge.finite_numbers(probs, spec.num_classes) is None:
            report.problem(f"{what}: predicted_probs is not a list of {spec.num_classes} numbers; the task's AUC is 0")
            probs = "malformed"
        return int(predicted), probs

    @staticmethod
    def csv_reference(row, spec, data_root: str):
        label = float(row.cell("mask"))
        if not label.is_integer() or not 0 <= label < spec.num_classes:
            raise ValueError(f"class {row.cell('mask')!r} is not one of 0..{spec.num_classes - 1}")
        return int(label)

    @classmethod
    def score_result(cls, spec, predictions, references, report) -> dict:
        predicted = np.asarray([p for p, _ in predictions])
        probs = [q for _, q in predictions]
        # The challenge computes AUC only when every scored record has probabilities.
        usable = all(q is not None and q != "malformed" for q in probs)
        values = challenge.classification_metrics(np.asarray(probs, np.float64) if usable else None,
                                                  np.asarray(references), spec.num_classes, predicted=predicted)
        if not usable:
            report.problem(f"task {spec.id!r}: {sum(q is None for q in probs)} scored record(s) without predicted_probs; "
                           "AUC is 0, as in the challenge")
        result = cls.scored_figures(values)
        result["per_class"] = {f"class_{c}": {"F1": values[f"class_{c}_F1"]} for c in range(spec.num_classes)}
        return result

    @staticmethod
    def parse_csv_labels(row, spec, cells) -> dict:
        return {"label": cells.parse_class(row, "mask", spec)}

    @staticmethod
    def label_difference(first, second, first_digest, second_digest):
        if first["label"] != second["label"]:
            return "mask", f"class {second['label']} here, class {first['label']} there"
        return None

    @staticmethod
    def layout_folder(spec) -> str:
        return f"Classification/{spec.id}"

    @staticmethod
    def layout_cells(spec, example, folder, index, save_file) -> dict:
        return {"mask": str(example["label"])}

    @staticmethod
    def check_folder_labels(value, spec, image_info, checks) -> tuple:
        label = value("label")
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise checks.RowProblem("label", f"{label!r} is not an integer class")
        problem = checks.class_problem(int(label), spec)
        if problem:
            raise checks.RowProblem("label", problem)
        _, _, digest = image_info()  # readable?
        return digest, ("label", int(label))
