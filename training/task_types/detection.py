"""Detection on the training side: the challenge's IoU of one box per image, the mean-box baseline."""

from __future__ import annotations

import numpy as np

from modeling_m2dino.detection import DetectionType

from .. import metrics as challenge
from .base import TrainingTaskType

BOX_FIELDS = ("x_min", "y_min", "x_max", "y_max")


class DetectionTraining(TrainingTaskType):
    model_type = DetectionType
    primary_metric = "IoU"
    per_sample_key = "per_sample_iou"
    challenge_figures = ("IoU",)
    prediction_file = "detection_predictions.json"
    record_fields = ("image_path", "task_id", "bbox_pixels")
    pipeline_tag = "object-detection"
    auto_class = "AutoModelForObjectDetection"
    colour = "tab:green"
    example_features = {
        "boxes": lambda datasets: datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
        "class_labels": lambda datasets: datasets.Sequence(datasets.Value("int64")),
    }
    stored_columns = {
        "boxes": lambda datasets: datasets.List(datasets.List(datasets.Value("float64"))),
        "class_labels": lambda datasets: datasets.List(datasets.Value("int64")),
    }
    label_arrays = {"boxes": (np.float32, (-1, 4)), "class_labels": (np.int64, None)}

    @staticmethod
    def metrics(task, predictions, references, image_sizes=None, distances: bool = True) -> dict:
        boxes, scores = challenge.split_detections(predictions)
        return challenge.detection_metrics(boxes, scores, references)

    @staticmethod
    def metric_features(datasets) -> dict:
        box = datasets.Sequence(datasets.Value("float64"))
        return {"predictions": box, "references": box}

    @staticmethod
    def metric_values(predictions, references) -> dict:
        """Predictions: the top predicted box [x_min, y_min, x_max, y_max]; references: the ground-truth box."""
        return challenge.detection_metrics([np.asarray(p, np.float64)[None] for p in predictions], None,
                                           [np.asarray(r, np.float64) for r in references])

    @staticmethod
    def baseline(task, train_references, eval_references, train_sizes=None, eval_sizes=None):
        """The mean training box in normalised coordinates (divided by W, H) scaled to each eval image:
        [{"boxes": (1, 4), "scores": (1,)}]. Needs train_sizes and eval_sizes (H, W)."""
        train_hw = challenge.image_sizes_of(train_sizes, train_references, "train_sizes")
        eval_hw = challenge.image_sizes_of(eval_sizes, eval_references, "eval_sizes")
        # The first GT box of each training image: the challenge has one box per image.
        boxes = np.stack([challenge.as_boxes(b)[0] for b in train_references])
        scale = np.concatenate([train_hw[:, ::-1], train_hw[:, ::-1]], 1)  # (W, H, W, H)
        mean_box = (boxes / scale).mean(0)
        eval_scale = np.concatenate([eval_hw[:, ::-1], eval_hw[:, ::-1]], 1)
        return [{"boxes": (mean_box * s)[None], "scores": np.ones(1)} for s in eval_scale]

    @staticmethod
    def layout_references(task, labels, positions, original_sizes):
        result = []
        for i, (height, width) in zip(positions, original_sizes):
            present = np.asarray(labels["box_labels"])[i] != -100
            cx, cy, w, h = np.asarray(labels["boxes"])[i][present].astype(np.float64).T
            result.append(np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                    (cy + h / 2) * height], axis=-1).astype(np.float32))
        return result

    @staticmethod
    def prediction_record(task, prediction) -> dict:
        # `decode` lists every query's box, best first; the challenge scores one box per image.
        return {"bbox_pixels": [float(v) for v in np.asarray(prediction["boxes"])[0]],
                "score": float(np.asarray(prediction["scores"])[0])}

    @staticmethod
    def record_value(spec, record: dict, what: str, report):
        box = challenge.finite_numbers(record["bbox_pixels"], 4)
        if box is None:
            report.problem(f"{what}: bbox_pixels {record['bbox_pixels']!r} is not [x_min, y_min, x_max, y_max]")
        return box

    @staticmethod
    def csv_reference(row, spec, data_root: str):
        return [float(row.cell(name)) for name in BOX_FIELDS]

    @classmethod
    def score_result(cls, spec, predictions, references, report) -> dict:
        values = challenge.detection_metrics([np.asarray(b)[None] for b in predictions], None, references)
        return cls.scored_figures(values)

    @staticmethod
    def parse_csv_labels(row, spec, cells) -> dict:
        box = [cells.parse_number(row, name) for name in BOX_FIELDS]
        if box[2] <= box[0]:
            raise cells.RowProblem("x_max", f"x_max {box[2]} <= x_min {box[0]}")
        if box[3] <= box[1]:
            raise cells.RowProblem("y_max", f"y_max {box[3]} <= y_min {box[1]}")
        # The challenge has one box of class 0; a lab's multi-class detection task puts the class in `mask`.
        return {"boxes": [box], "class_labels": [cells.parse_class(row, "mask", spec) if spec.num_classes > 1 else 0]}

    @staticmethod
    def check_in_image(values, spec, width, height, checks):
        found = checks.box_problem(values["boxes"][0], width, height)
        if found:
            raise checks.RowProblem(BOX_FIELDS[found[0]], found[1])
        return None

    @staticmethod
    def label_difference(first, second, first_digest, second_digest):
        a, b = first, second
        if a["boxes"] != b["boxes"] or a["class_labels"] != b["class_labels"]:
            fields = [name for name, x, y in zip(BOX_FIELDS, a["boxes"][0], b["boxes"][0]) if x != y] or ["mask"]
            return fields[0], f"box {b['boxes'][0]} class {b['class_labels']} here, box {a['boxes'][0]} class {a['class_labels']} there"
        return None

    @staticmethod
    def synthetic_labels(spec, scene, mask, geometry, field_of_view, size) -> dict:
        region = geometry[scene.box] & field_of_view
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        return {"boxes": np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], np.float32),
                "class_labels": np.zeros(1, np.int64)}

    @staticmethod
    def layout_folder(spec) -> str:
        return f"Detection/{spec.id}"

    @staticmethod
    def layout_cells(spec, example, folder, index, save_file) -> dict:
        return dict(zip(BOX_FIELDS, (repr(float(v)) for v in example["boxes"][0])))

    @staticmethod
    def check_folder_labels(value, spec, image_info, checks) -> tuple:
        width, height, digest = image_info()
        boxes = checks.matrix(value("boxes"), 4, "boxes")
        if len(boxes) == 0:
            raise checks.RowProblem("boxes", "no box")
        for box in boxes:
            found = checks.box_problem([float(v) for v in box], width, height)
            if found:
                raise checks.RowProblem("boxes", found[1])
        labels = list(value("class_labels"))
        if len(labels) != len(boxes):
            raise checks.RowProblem("class_labels", f"{len(labels)} class labels for {len(boxes)} boxes")
        for label in labels:
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
                raise checks.RowProblem("class_labels", f"{label!r} is not an integer class")
            problem = checks.class_problem(int(label), spec)
            if problem:
                raise checks.RowProblem("class_labels", problem)
        return digest, ("boxes", boxes.tolist(), [int(label) for label in labels])
