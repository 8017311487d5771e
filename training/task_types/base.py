"""`TrainingTaskType`: the training side of one task type (data, metrics, baselines, submission, cards, figures).

Its model side is a `modeling_m2dino.task_types.TaskType` (head, loss, encoding, decoding), named by `model_type`.
"""

from __future__ import annotations

import numpy as np


class TrainingTaskType:
    """Everything that is specific to one task type on the training side. Subclasses set the class attributes and
    implement the methods; a subclass with a `model_type` registers itself in `TRAINING_TASK_TYPES`.

    Attributes:
        model_type: the model side's `TaskType`.
        primary_metric: the metric checkpoints are selected on; `higher_is_better` its direction.
        per_sample_key: the per-sample score the bootstrap CI resamples, in the primary metric's direction.
        challenge_figures: the figures the challenge reports (and averages per type), in its order;
            `extra_figures` the ones `m2dino-score` and `m2dino-evaluate` report beside them.
        prediction_file: the submission JSON of this type's records; None when predictions are mask files.
        record_fields: the fields the challenge's scorer reads from a record.
        pipeline_tag: the Hub's name of the type (pipeline_tag, model-index task type); `auto_class` the Auto class
            that loads a model for it.
        count_nouns: how a card counts the outputs of a task (singular, plural).
        colour: the colour of the type in the experiment's figures.
        class_per_image: whether an example's label is one class for the whole image (splits are then stratified
            by class, and the synthetic suite draws every class).
        allows_zoom: whether augmentation may zoom an example (not when a label is a size in physical units).
        scores_per_class: whether the scored figures hold a `per_class` part (empty when nothing was scored).
        example_features: the label of an example dict (and a datasets folder's label columns), name -> `datasets`
            feature factory.
        stored_columns: the challenge reader's stored label columns, name -> `datasets` feature factory.
        label_arrays: stored label columns decoded to numpy for the example, name -> (dtype, shape or None).
    """

    model_type = None
    primary_metric: str = ""
    higher_is_better: bool = True
    per_sample_key: str = ""
    challenge_figures: tuple[str, ...] = ()
    extra_figures: tuple[str, ...] = ()
    prediction_file: str | None = None
    record_fields: tuple[str, ...] = ()
    pipeline_tag: str = ""
    auto_class: str = ""
    count_nouns: tuple[str, str] = ("class", "classes")
    colour: str = "tab:gray"
    class_per_image: bool = False
    allows_zoom: bool = True
    scores_per_class: bool = False
    example_features: dict = {}
    stored_columns: dict = {}
    label_arrays: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.model_type is not None:
            from . import TRAINING_TASK_TYPES

            TRAINING_TASK_TYPES.register(cls)

    @classmethod
    def name(cls) -> str:
        return cls.model_type.name

    # ---- metrics -----------------------------------------------------------------------------------------------

    @staticmethod
    def metrics(task, predictions, references, image_sizes=None, distances: bool = True) -> dict:
        """The task's metrics (see `m2dino_training.metrics`)."""
        raise NotImplementedError

    @staticmethod
    def metric_features(datasets) -> dict:
        """The inputs of one sample in the `evaluate` module (`metrics_modules/fmc_uia.py`), `predictions` and
        `references` -> `datasets` feature."""
        raise NotImplementedError

    @staticmethod
    def metric_values(predictions, references, **options) -> dict:
        """The task's metrics from the `evaluate` module's inputs (one sample per row, original-image pixels)."""
        raise NotImplementedError

    @staticmethod
    def baseline(task, train_references, eval_references, train_sizes=None, eval_sizes=None):
        """Label-only predictions for `eval_references`, fitted on `train_references` alone."""
        raise NotImplementedError

    @staticmethod
    def stack(values: list):
        """Per-sample predictions or references -> the form the metrics take (a list unless said otherwise)."""
        return values

    @classmethod
    def score_without_baseline(cls, value: float, metrics, image_diagonal: float | None) -> float:
        """A lower-is-better primary metric as a [0, 1] score when no baseline figure is given."""
        raise ValueError(f"a {cls.name()} score needs baseline_metrics to be normalised")

    fits_head = False  # True where `fit_head` reads training examples (callers decode them only then)

    @staticmethod
    def fit_head(head, task, train_examples: list[dict]):
        """Sets what a new head keeps of its training labels (before training; a resumed run reloads it)."""

    # ---- the Trainer's gathered labels -------------------------------------------------------------------------

    @staticmethod
    def layout_references(task, labels: dict, positions: np.ndarray, original_sizes: np.ndarray):
        """A task's references from the gathered fixed-layout labels (`modeling_m2dino.per_sample`)."""
        raise NotImplementedError

    @staticmethod
    def layout_sizes(references, original_sizes) -> list:
        """The image sizes the gathered predictions are decoded to: the original ones unless said otherwise."""
        return [tuple(int(v) for v in size) for size in original_sizes]

    # ---- the challenge submission ------------------------------------------------------------------------------

    @staticmethod
    def prediction_record(task, prediction) -> dict:
        """One prediction's fields in the challenge's record (beside `image_path` and `task_id`)."""
        raise ValueError(f"task {task.id!r}: a {task.type} prediction has no JSON record")

    @staticmethod
    def record_value(spec, record: dict, what: str, report):
        """A record's prediction in the form `score_result` takes, or None (reported) when a field is malformed."""
        raise NotImplementedError

    @staticmethod
    def csv_reference(row, spec, data_root: str):
        """A challenge CSV row's ground truth in the form `score_result` takes (raises ValueError when unreadable)."""
        raise NotImplementedError

    @staticmethod
    def score_result(spec, predictions: list, references: list, report) -> dict:
        """The task's figures in the challenge's layout, from predictions read back from a submission."""
        raise NotImplementedError

    @classmethod
    def scored_figures(cls, values: dict) -> dict:
        """The challenge's figures and the extra ones of a metrics dict, and its sample count."""
        result = {name: float(values[name]) for name in cls.challenge_figures + cls.extra_figures}
        result["num_samples"] = int(values["num_samples"])
        return result

    # ---- data --------------------------------------------------------------------------------------------------

    @classmethod
    def csv_count(cls, spec) -> int:
        """What the challenge CSVs write in `num_classes` for a task of this type."""
        return cls.model_type.count(spec)

    @staticmethod
    def parse_csv_labels(row, spec, cells) -> dict:
        """A challenge CSV row's label fields (see `data/fmc_uia.py`), read from its cells alone; `cells` holds the
        reader's cell parsers."""
        raise NotImplementedError

    @staticmethod
    def check_in_image(values: dict, spec, width: int, height: int, checks):
        """Checks of a challenge CSV row's parsed labels that need its image size (`checks`: the shared checks);
        returns a digest of labels stored in files (masks), or None."""
        return None

    @staticmethod
    def label_difference(first: dict, second: dict, first_digest, second_digest):
        """(CSV field, description) of the first label that differs between two parsed rows of one task, or None."""
        return None

    @staticmethod
    def csv_columns(spec) -> tuple[str, ...]:
        """Challenge CSV columns a task of this type needs beyond the challenge's own (see `data/synthetic/`)."""
        return ()

    # ---- the synthetic suite (`data/synthetic/`) ---------------------------------------------------------------

    synthetic_train_size = 200  # training examples at scale 1 of a task outside the challenge's 27

    @staticmethod
    def synthetic_scene(spec) -> tuple:
        """How the synthetic suite draws a task it has no scene of (one of `EXTRA_TASKS`): (draw, probe), where
        `draw(canvas, class_name)` paints the scene and returns its geometry (names -> values or masks)."""
        raise ValueError(f"task {spec.id!r}: the synthetic suite has no scene for it, and its type draws none")

    @staticmethod
    def synthetic_labels(spec, scene, mask, geometry: dict, field_of_view, size: int) -> dict:
        """A synthetic example's label fields, from its drawn scene (`scene.parts` painted in `mask`, the named
        `geometry`, the probe's field of view), in pixels of the size x size image."""
        return {}

    @staticmethod
    def layout_folder(spec) -> str:
        """A task's folder in the challenge's layout."""
        raise NotImplementedError

    @staticmethod
    def layout_cells(spec, example: dict, folder, index: int, save_file) -> dict:
        """An example's label cells in the challenge's CSV; `save_file(relative path, array)` writes a label file
        (a mask) and returns the path the CSV holds."""
        raise NotImplementedError

    @staticmethod
    def check_folder_labels(value, spec, image_info, checks) -> tuple:
        """A datasets-folder row's labels checked (see `data/hf_folder.py`): returns (image digest, label key).
        `value(name)` reads a required field; `image_info()` opens the image; `checks` holds the shared checks."""
        raise NotImplementedError


__all__ = ["TrainingTaskType"]
