"""Segmentation on the training side: DSC and HD, the majority-mask baseline, masks as submission files."""

from __future__ import annotations

import os

import numpy as np

from modeling_m2dino.segmentation import SegmentationType

from .. import metrics as challenge
from .base import TrainingTaskType

# The challenge files segmentation tasks by their class count.
_COUNT_FOLDERS = {2: "Two", 3: "Three", 4: "Four", 5: "Five"}
_MAJORITY_GRID = (128, 128)  # resolution of the per-pixel vote of the baseline, in normalised image coordinates


class SegmentationTraining(TrainingTaskType):
    model_type = SegmentationType
    primary_metric = "DSC"
    per_sample_key = "per_sample_dsc"
    challenge_figures = ("DSC", "HD")
    extra_figures = ("HD95",)
    prediction_file = None  # one PNG per row, at the row's mask_path
    pipeline_tag = "image-segmentation"
    auto_class = "AutoModelForSemanticSegmentation"
    scores_per_class = True
    colour = "tab:blue"
    example_features = {"mask": lambda datasets: datasets.Image()}
    stored_columns = {"mask_path": lambda datasets: datasets.Value("string")}

    @staticmethod
    def metrics(task, predictions, references, image_sizes=None, distances: bool = True) -> dict:
        return challenge.segmentation_metrics(predictions, references, task.num_classes, class_names=task.labels[1:],
                                              distances=distances)

    @staticmethod
    def metric_features(datasets) -> dict:
        mask = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
        return {"predictions": mask, "references": mask}

    @classmethod
    def metric_values(cls, predictions, references, num_classes=None) -> dict:
        """(H, W) class-index masks; `num_classes` counts the background."""
        if num_classes is None:
            raise ValueError(f"{cls.name()}: pass num_classes (background included)")
        return challenge.segmentation_metrics([np.asarray(p) for p in predictions], [np.asarray(r) for r in references],
                                              num_classes)

    @staticmethod
    def baseline(task, train_references, eval_references, train_sizes=None, eval_sizes=None):
        """The better, by mean foreground Dice on the TRAINING masks, of the all-background mask and the per-pixel
        majority mask (training masks resized to a 128x128 normalised grid, per-pixel most frequent class, resized
        back to each eval mask's shape by nearest neighbour). Chosen on training data so it never sees eval labels."""
        votes = np.zeros((task.num_classes, *_MAJORITY_GRID), np.int64)
        onehot_classes = np.arange(task.num_classes)[:, None, None]
        for mask in train_references:
            votes += challenge.resize_nearest(np.asarray(mask), _MAJORITY_GRID)[None] == onehot_classes
        majority = votes.argmax(0)

        def dice_on_train(predict):
            return np.mean([challenge.dice_per_class(predict(np.asarray(m).shape), np.asarray(m, np.int64), task.num_classes)[1:].mean()
                            for m in train_references])

        def empty(shape):
            return np.zeros(shape, np.int64)

        def vote(shape):
            return challenge.resize_nearest(majority, shape)

        best = vote if majority.any() and dice_on_train(vote) > dice_on_train(empty) else empty
        return [best(np.asarray(m).shape) for m in eval_references]

    @staticmethod
    def layout_references(task, labels, positions, original_sizes):
        """Masks at the processed size: the Trainer gathers masks of one size."""
        return [np.asarray(labels["masks"])[i].astype(np.int64) for i in positions]

    @staticmethod
    def layout_sizes(references, original_sizes) -> list:
        return [ref.shape for ref in references]

    @staticmethod
    def csv_reference(row, spec, data_root: str):
        from ..data.checks import read_mask

        mask = read_mask(os.path.normpath(os.path.join(data_root, "csv_files", row.cell("mask_path"))))
        if mask.size and mask.max() >= spec.num_classes:
            raise ValueError(f"mask value {mask.max()} >= num_classes {spec.num_classes}")
        return mask

    @classmethod
    def score_result(cls, spec, predictions, references, report) -> dict:
        values = challenge.segmentation_metrics(predictions, references, spec.num_classes)
        result = cls.scored_figures(values)
        result["per_class"] = {f"class_{c}": {"DSC": values[f"class_{c}_DSC"], "HD": values[f"class_{c}_HD"]}
                               for c in range(spec.num_classes)}
        return result

    @staticmethod
    def parse_csv_labels(row, spec, cells) -> dict:
        return {"mask_path": cells.resolve(row.csv_dir, row.cell("mask_path"))}

    @staticmethod
    def check_in_image(values, spec, width, height, checks):
        try:
            mask = checks.read_mask(values["mask_path"])
        except FileNotFoundError:
            raise checks.RowProblem("mask_path", f"mask file not found: {values['mask_path']}") from None
        except Exception as error:
            raise checks.RowProblem("mask_path", f"cannot read mask {values['mask_path']}: {error}") from None
        problem = checks.mask_problem(mask, spec, width, height)
        if problem:
            raise checks.RowProblem("mask_path", problem)
        return checks.pixel_digest(mask)

    @staticmethod
    def label_difference(first, second, first_digest, second_digest):
        if first_digest != second_digest:
            return "mask_path", f"mask {second['mask_path']} here, mask {first['mask_path']} there (different class maps)"
        return None

    @staticmethod
    def synthetic_labels(spec, scene, mask, geometry, field_of_view, size) -> dict:
        return {"mask": np.where(field_of_view, mask, 0).astype(np.uint8)}

    @staticmethod
    def layout_folder(spec) -> str:
        return f"Segmentation/{_COUNT_FOLDERS[spec.num_classes]}/{spec.id}"

    @staticmethod
    def layout_cells(spec, example, folder, index, save_file) -> dict:
        return {"mask_path": save_file(folder / "masks" / f"{index:06d}.png", example["mask"])}

    @staticmethod
    def check_folder_labels(value, spec, image_info, checks) -> tuple:
        width, height, digest = image_info()
        try:
            mask = checks.stored_mask(value("mask"))
        except FileNotFoundError as error:
            raise checks.RowProblem("mask", f"file not found: {error.filename}") from None
        except (ValueError, OSError) as error:
            raise checks.RowProblem("mask", f"cannot read mask: {error}") from None
        problem = checks.mask_problem(mask, spec, width, height)
        if problem:
            raise checks.RowProblem("mask", problem)
        return digest, ("mask", checks.pixel_digest(mask))
