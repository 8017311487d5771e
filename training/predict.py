"""`m2dino-predict` and the challenge entry point: a submission folder in the FMC_UIA organisers' format.

    m2dino-predict --model m2dino --data DIR --out predictions/ [--split all|train|val|test]

Writes into `--out` exactly what the challenge's scorer reads (original-image pixels):
- `classification_predictions.json`: a JSON list of `{"image_path", "task_id", "predicted_class" (int),
  "predicted_probs" (one probability per class)}`;
- `detection_predictions.json`: a list of `{"image_path", "task_id", "bbox_pixels": [x_min, y_min, x_max,
  y_max], "score"}` (the top-scoring box: the challenge has one box per image);
- `regression_predictions.json`: a list of `{"image_path", "task_id", "predicted_points_pixels": [x1, y1,
  x2, y2, ...]}`;
- segmentation: one 8-bit single-channel PNG (class index per pixel, no palette) per row at
  `<out>/<the row's mask_path with every "../" removed>`, at the original image size.
`image_path` and `task_id` are the CSV's cells verbatim (leading `../` included): the scorer matches a
record to its row by that exact string, per task, so two tasks that share an image each get their record.

The folder may be a test-time folder whose CSVs carry only `image_path`, `task_id`, `task_name` (and
`mask_path`, where a predicted mask goes): nothing but the images is read. Rows of tasks the model does
not serve are left out and counted per task in the summary. `--split all` (the default) predicts every row
of `DIR/csv_files/`, as the challenge's container does; `train` / `val` / `test` predict one split.

`ChallengeModel` is the class the challenge's container calls (`predict(data_root, output_dir)`); it and
`m2dino-predict` run the same `predict_folder`.
"""

import argparse
import json
import os

import numpy as np
from PIL import Image

from modeling_m2dino.tasks import TaskSpec

from .evaluate import examples_by_task, load_split, predict
from .task_types import TRAINING_TASK_TYPES, training_task_type

# The submission's JSON files by task type (masks go to PNG files instead), and the fields the challenge's scorer
# reads from each record of them.
PREDICTION_FILES = {name: kind.prediction_file for name, kind in TRAINING_TASK_TYPES.items() if kind.prediction_file}
REQUIRED_FIELDS = {name: kind.record_fields for name, kind in TRAINING_TASK_TYPES.items() if kind.prediction_file}


def submission_image_path(example: dict, data_root: str) -> str:
    """The key of an example's record: its CSV `image_path` cell verbatim, or (for a datasets folder,
    which has no CSV) its image's path relative to the data folder, or its `source` when it has no path."""
    if example.get("csv_image_path"):
        return example["csv_image_path"]
    if example.get("image_path"):
        return os.path.relpath(example["image_path"], data_root).replace(os.sep, "/")
    return str(example["source"])


def fallback_mask_path(image_key: str) -> str:
    """A mask file name for a row without `mask_path`: its image path with `_mask.png` for the extension,
    or its `source` ("<file>:<row>") made a file name."""
    stem, extension = os.path.splitext(image_key)
    if extension.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"):
        return stem + "_mask.png"
    return image_key.replace(":", "_row") + "_mask.png"


def mask_output_path(out_dir: str, mask_path: str) -> str:
    """Where the challenge's scorer looks for a row's predicted mask: `mask_path` with every "../" removed."""
    return os.path.join(out_dir, mask_path.replace("../", ""))


def prediction_record(task: TaskSpec, image_path: str, prediction) -> dict:
    """One row's record in the challenge's vocabulary (segmentation masks go to PNG files instead)."""
    return {"image_path": image_path, "task_id": task.id, **training_task_type(task).prediction_record(task, prediction)}


def write_mask(path: str, mask: np.ndarray) -> None:
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"{path}: a predicted mask must be 2-D class indices 0..255, got shape {mask.shape}")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)  # 2-D uint8: mode "L", no palette


def write_submission(model, processor, data, data_root: str, out_dir: str, tasks=None, batch_size: int = 32) -> dict:
    """Predict every example of `data` (one split) for the model's tasks and write the submission files.

    Returns per task the number of records written. Two segmentation rows whose masks would land on the same
    file, or two rows of one task with the same `image_path`, stop with both rows named: one would
    silently overwrite the other, and the scorer cannot tell them apart.
    """
    specs = {t.id: t for t in model.config.task_specs}
    records = {kind: [] for kind in PREDICTION_FILES}
    seen_keys, seen_masks, counts = {}, {}, {}
    os.makedirs(out_dir, exist_ok=True)
    for task_id, examples in examples_by_task(data, tasks or model.served_tasks).items():
        task = specs[task_id]
        for example, prediction in zip(examples, predict(model, processor, task, examples, batch_size)):
            image_path = submission_image_path(example, data_root)
            where = example.get("source") or image_path
            key = (task_id, image_path)
            if key in seen_keys:
                raise ValueError(f"{where} and {seen_keys[key]}: two rows of task {task_id!r} with image_path {image_path!r}")
            seen_keys[key] = where
            if training_task_type(task).prediction_file is None:
                # Without a CSV (a datasets folder) there is no mask_path: the mask is named after the record's key.
                mask_path = example.get("csv_mask_path") or fallback_mask_path(image_path)
                path = os.path.normpath(mask_output_path(out_dir, mask_path))
                if path in seen_masks:
                    raise ValueError(f"{where} and {seen_masks[path]}: both rows' predicted masks would be written to {path}")
                seen_masks[path] = where
                write_mask(path, prediction)
            else:
                records[task.type].append(prediction_record(task, image_path, prediction))
        counts[task_id] = len(examples)
    for kind, name in PREDICTION_FILES.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(records[kind], f, indent=1)
    return counts


def predict_folder(model, processor, data_root: str, out_dir: str, split: str = "all", tasks=None,
                   batch_size: int = 32, on_error: str = "raise") -> dict:
    """Write the submission for `data_root` (see the module docstring); returns a summary dict:
    `counts` (records per task), `left_out` (rows per task of tasks the model does not serve),
    `skipped` (rows per task dropped with on_error="skip") and `problems`."""
    served = list(tasks or model.served_tasks)
    unknown = sorted(set(served) - set(model.served_tasks))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the model serves {', '.join(model.served_tasks)}")
    data, report = load_split(data_root, split, served, model.config.task_specs, on_error=on_error, require_labels=False)
    counts = write_submission(model, processor, data, os.path.abspath(data_root), out_dir, served, batch_size)
    loaded_split = "train" if split == "all" else split  # "all" is loaded as one seeded split holding every row
    summary = {"counts": counts, "left_out": (report.get("left_out") or {}).get(loaded_split, {}),
               "skipped": (report.get("skipped") or {}).get(loaded_split, {}), "problems": report.get("problems", [])}
    with open(os.path.join(out_dir, "prediction_summary.json"), "w", encoding="utf-8") as f:
        json.dump(dict(summary, data=os.path.abspath(data_root), split=split), f, indent=1)
    return summary


def describe(summary: dict, out_dir: str) -> str:
    lines = [f"wrote predictions for {sum(summary['counts'].values())} rows of {len(summary['counts'])} task(s) into {out_dir}"]
    if summary["left_out"]:
        lines.append("left out (tasks the model does not serve or not asked for), rows per task: "
                     + ", ".join(f"{task} {n}" for task, n in summary["left_out"].items()))
    if summary["skipped"]:
        lines.append("skipped (rows with problems), rows per task: "
                     + ", ".join(f"{task} {n}" for task, n in summary["skipped"].items()))
        lines += [f"  {problem}" for problem in summary["problems"][:10]]
    return "\n".join(lines)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model_dir: str, device: str | None = None):
    """A saved M2DINO folder's model (in eval mode, on `device`, default `default_device()`) and processor."""
    from modeling_m2dino import M2DinoForMultiTask, M2DinoImageProcessor

    model = M2DinoForMultiTask.from_pretrained(model_dir).to(device or default_device()).eval()
    return model, M2DinoImageProcessor.from_pretrained(model_dir)


class ChallengeModel:
    """The challenge container's entry point: `Model().predict(data_root, output_dir)`.

    Loads a saved M2DINO folder (`model_dir`, else the class attribute `model_dir`, else the environment
    variable `M2DINO_MODEL_DIR`) and writes the submission for every row of `data_root/csv_files/`. A
    participant's container needs three lines::

        from m2dino_training.predict import ChallengeModel
        class Model(ChallengeModel):
            model_dir = "/opt/m2dino"  # the folder m2dino-train wrote
    """

    model_dir: str | None = None

    def __init__(self, model_dir: str | None = None, device: str | None = None, batch_size: int = 32):
        model_dir = model_dir or self.model_dir or os.environ.get("M2DINO_MODEL_DIR")
        if not model_dir:
            raise ValueError("no model folder: pass model_dir, set the class attribute model_dir, or set M2DINO_MODEL_DIR")
        self.model, self.processor = load_model(model_dir, device)
        self.batch_size = batch_size

    def predict(self, data_root: str, output_dir: str) -> dict:
        summary = predict_folder(self.model, self.processor, data_root, output_dir, "all", batch_size=self.batch_size)
        print(describe(summary, output_dir), flush=True)
        return summary


Model = ChallengeModel


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write a challenge submission (the FMC_UIA organisers' format) for a folder.")
    parser.add_argument("--model", required=True, help="saved M2DINO folder")
    parser.add_argument("--data", required=True, help="challenge-layout (or datasets) folder")
    parser.add_argument("--out", required=True, help="submission folder to write")
    parser.add_argument("--split", default="all", help="all (every CSV row, the default), train, val or test")
    parser.add_argument("--tasks", nargs="+", help="task ids (default: every task the model serves)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--on_error", choices=("raise", "skip"), default="raise",
                        help="a row whose image cannot be read: stop (raise) or leave it out and report it (skip)")
    args = parser.parse_args(argv)
    model, processor = load_model(args.model, args.device)
    try:
        summary = predict_folder(model, processor, args.data, args.out, args.split, args.tasks, args.batch_size,
                                 args.on_error)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    print(describe(summary, args.out))
    return summary


if __name__ == "__main__":
    main()
