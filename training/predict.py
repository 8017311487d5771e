"""`m2dino-predict`: predictions for a challenge-layout folder, written as submission files.

    m2dino-predict --model m2dino --data DIR --out predictions/

Writes, keyed by each image's path relative to `--data` (the CSV vocabulary, original-image pixels):
- `classification_predictions.json`: `{image: {"task_id", "prediction" (class index), "label" (name), "probabilities"}}`
- `detection_predictions.json`: `{image: {"task_id", "boxes": [[x_min, y_min, x_max, y_max], ...], "scores", "labels"}}`,
  best box first (the challenge scores the first box of its one-box tasks)
- `regression_predictions.json`: `{image: {"task_id", "point_1_xy": [x, y], ...}}`
- `masks/<image path>.png`: 8-bit class-index masks of the segmentation tasks, at the original size.
`read_predictions` reads them back into the metrics' form, so a folder can be scored offline.
"""

import argparse
import json
import os

import numpy as np
from PIL import Image

from modeling_m2dino.tasks import TaskSpec

from .evaluate import examples_by_task, predict

PREDICTION_FILES = {
    "classification": "classification_predictions.json",
    "detection": "detection_predictions.json",
    "regression": "regression_predictions.json",
}


def image_key(example: dict, data_root: str) -> str:
    return os.path.relpath(example["image_path"], data_root).replace(os.sep, "/")


def mask_file(out_dir: str, key: str) -> str:
    relative = key.replace("../", "")
    return os.path.join(out_dir, "masks", os.path.splitext(relative)[0] + ".png")


def prediction_record(task: TaskSpec, prediction) -> dict:
    """One image's prediction in the submission vocabulary (segmentation masks go to PNG files instead)."""
    if task.type == "classification":
        index = int(np.argmax(prediction))
        return {"task_id": task.id, "prediction": index, "label": task.labels[index],
                "probabilities": [float(p) for p in prediction]}
    if task.type == "detection":
        return {"task_id": task.id, "boxes": np.asarray(prediction["boxes"], float).round(3).tolist(),
                "scores": [float(s) for s in prediction["scores"]], "labels": [task.labels[0]] * len(prediction["scores"])}
    return {"task_id": task.id, **{f"point_{i + 1}_xy": [float(x), float(y)] for i, (x, y) in enumerate(prediction)}}


def write_predictions(model, processor, data, data_root: str, out_dir: str, tasks=None, batch_size: int = 32) -> dict:
    """Predict every example of `data` (a split) for the model's tasks and write the submission files."""
    specs = {t.id: t for t in model.config.task_specs}
    records = {kind: {} for kind in PREDICTION_FILES}
    counts = {}
    for task_id, examples in examples_by_task(data, tasks or model.served_tasks).items():
        task = specs[task_id]
        for example, prediction in zip(examples, predict(model, processor, task, examples, batch_size)):
            key = image_key(example, data_root)
            if task.type == "segmentation":
                path = mask_file(out_dir, key)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(prediction.astype(np.uint8)).save(path)
            else:
                records[task.type][key] = prediction_record(task, prediction)
        counts[task_id] = len(examples)
    os.makedirs(out_dir, exist_ok=True)
    for kind, name in PREDICTION_FILES.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(records[kind], f, indent=1)
    return counts


def read_predictions(out_dir: str, task: TaskSpec, examples: list[dict], data_root: str) -> list:
    """The written predictions of one task's examples, in the form `metrics.task_metrics` takes."""
    keys = [image_key(e, data_root) for e in examples]
    if task.type == "segmentation":
        return [np.asarray(Image.open(mask_file(out_dir, key))) for key in keys]
    with open(os.path.join(out_dir, PREDICTION_FILES[task.type]), encoding="utf-8") as f:
        records = json.load(f)
    missing = [k for k in keys if k not in records]
    if missing:
        raise ValueError(f"{out_dir}: no {task.type} prediction for {missing[:5]}")
    if task.type == "classification":
        return np.asarray([records[k]["probabilities"] for k in keys])
    if task.type == "detection":
        return [{"boxes": np.asarray(records[k]["boxes"], float).reshape(-1, 4), "scores": np.asarray(records[k]["scores"])}
                for k in keys]
    return [np.asarray([records[k][f"point_{i + 1}_xy"] for i in range(task.num_points)]) for k in keys]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write challenge submission files for a challenge-layout folder.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="challenge-layout (or datasets) folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--tasks", nargs="+")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)

    from modeling_m2dino import M2DinoForMultiTask, M2DinoImageProcessor

    from .data.hf_folder import load_data

    model = M2DinoForMultiTask.from_pretrained(args.model).eval()
    processor = M2DinoImageProcessor.from_pretrained(args.model)
    data = load_data(args.data, registry=model.config.task_specs)
    if args.split not in data:
        raise SystemExit(f"{args.data} has no split {args.split!r}; it has {list(data)}")
    counts = write_predictions(model, processor, data[args.split], os.path.abspath(args.data), args.out, args.tasks,
                               args.batch_size)
    print(f"wrote predictions for {sum(counts.values())} images of {len(counts)} tasks into {args.out}")
    return counts


if __name__ == "__main__":
    main()
