"""`m2dino-score`: score a submission folder exactly as the FMC_UIA challenge does, and say what it does not.

    m2dino-score --data ROOT --predictions OUT [--output scores.json]

`ROOT` is a challenge layout (`ROOT/csv_files/*.csv` with labels); `OUT` is a submission folder in the
organisers' format (see `predict.py`), ours or any other team's. Every row of every CSV is a candidate:
- a row with a matching record (same `task_id`, `image_path` equal to the CSV cell verbatim) or, for
  segmentation, a mask at `OUT/<mask_path without "../">` is scored; a row without one is skipped, as the
  challenge does, and counted per task (`rows_without_prediction`);
- a predicted mask of another size than its ground truth is resized to it by nearest neighbour (OpenCV's
  INTER_NEAREST index rule, as the challenge does) and counted; a palette PNG is read as grey levels, a
  16-bit PNG as its high byte (what the challenge's reader sees), and reported;
- the organisers' metrics (`metrics.py`) per task, then the average of each metric over the scored tasks
  of a type (the challenge's summary). The JSON nests results like the challenge's: per type, per task,
  the figures, `num_samples` and `per_class`.

Bad input never stops the rows that are fine from being scored; each problem names the file and the record
(index in the JSON list) or the CSV line, and the counts say what was left out: a prediction file that is
not a JSON list, a record without a required field or with a malformed value, a record whose
(`task_id`, `image_path`) no row lists, a `task_name` spelled otherwise than the organisers'
(`segmentation`, `classification`, `detection`, `Regression`: the challenge groups tasks by that exact
string, so such rows would not be scored there either), a `num_classes` that disagrees with the task.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from modeling_m2dino.task_types import TASK_TYPES
from modeling_m2dino.tasks import EXTRA_TASKS, FMC_UIA_TASKS

from .predict import PREDICTION_FILES, REQUIRED_FIELDS, mask_output_path
from .task_types import TRAINING_TASK_TYPES, training_task_type

_MAX_PROBLEMS = 200


@dataclass
class Row:
    csv_file: str
    line: int
    cells: dict

    @property
    def where(self) -> str:
        return f"{self.csv_file}, line {self.line}"

    def cell(self, name: str) -> str:
        return (self.cells.get(name) or "").strip()


@dataclass
class Report:
    problems: list = field(default_factory=list)
    rows_left_out: Counter = field(default_factory=Counter)  # rows that cannot be scored (bad CSV rows), per task
    rows_without_prediction: Counter = field(default_factory=Counter)
    records_matching_no_row: Counter = field(default_factory=Counter)  # per prediction file
    records_left_out: Counter = field(default_factory=Counter)  # malformed records, per prediction file
    resized_masks: Counter = field(default_factory=Counter)

    def problem(self, text: str) -> None:
        self.problems.append(text)


def read_csv_rows(data_root: str) -> list[Row]:
    csv_dir = os.path.join(data_root, "csv_files")
    if not os.path.isdir(csv_dir):
        raise FileNotFoundError(f"{data_root} has no csv_files/ folder: not a challenge layout")
    names = sorted(name for name in os.listdir(csv_dir) if name.lower().endswith(".csv"))
    if not names:
        raise FileNotFoundError(f"no .csv files in {csv_dir}")
    rows = []
    for name in names:
        path = os.path.join(csv_dir, name)
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            for cells in reader:
                if any((value or "").strip() for value in cells.values() if isinstance(value, str)):
                    rows.append(Row(os.path.join("csv_files", name), reader.line_num, cells))
    return rows


def resize_nearest_like_opencv(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize with OpenCV's INTER_NEAREST rule: source index floor(i * src / dst)."""
    rows = np.minimum(np.floor(np.arange(height) * (mask.shape[0] / height)).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(np.floor(np.arange(width) * (mask.shape[1] / width)).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def read_predicted_mask(path: str, shown: str, report: Report) -> np.ndarray:
    """A predicted mask as the challenge's reader sees it (8-bit grey levels), with what differs reported."""
    with Image.open(path) as image:
        image.load()
        mode = image.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            report.problem(f"{shown}: a 16-bit mask; the challenge reads 8-bit grey levels (the high byte), so class "
                           "indices read as 0: write an 8-bit single-channel PNG")
            return (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        if mode != "L":
            if mode not in ("1",):
                report.problem(f"{shown}: a {mode!r} image; the challenge reads it as grey levels, not class indices: "
                               "write an 8-bit single-channel PNG")
            image = image.convert("L")
        return np.asarray(image)


def load_records(pred_dir: str, kind: str, report: Report) -> list[tuple[int, dict]]:
    """(index, record) for the well-formed records of one prediction file; problems reported."""
    name = PREDICTION_FILES[kind]
    path = os.path.join(pred_dir, name)
    if not os.path.exists(path):
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
    except (OSError, ValueError) as error:
        report.problem(f"{name}: not readable as JSON ({error}); none of its records is scored")
        return []
    if not isinstance(records, list):
        report.problem(f"{name}: a JSON {type(records).__name__}, but the challenge reads a list of records; "
                       "none of its records is scored")
        return []
    good = []
    for index, record in enumerate(records):
        what = f"{name}, record {index}"
        if not isinstance(record, dict):
            report.problem(f"{what}: a {type(record).__name__}, not an object")
            report.records_left_out[name] += 1
            continue
        missing = [f for f in REQUIRED_FIELDS[kind] if f not in record]
        if missing:
            report.problem(f"{what}: missing field(s) {missing}")
            report.records_left_out[name] += 1
            continue
        if not isinstance(record["image_path"], str) or not isinstance(record["task_id"], str):
            report.problem(f"{what}: image_path and task_id must be strings")
            report.records_left_out[name] += 1
            continue
        good.append((index, record))
    return good


def _reference(row: Row, spec, data_root: str, report: Report):
    """The row's ground truth, or None (reported) when it cannot be read."""
    try:
        return training_task_type(spec).csv_reference(row, spec, data_root)
    except (OSError, ValueError, TypeError) as error:
        report.problem(f"{row.where}: the ground truth of this {spec.type} row cannot be read ({error}); row left out")
        return None


def _predicted_mask_path(row: Row, task_id: str, pred_dir: str, expected_masks: set, report: Report) -> str | None:
    """Where the submission holds a segmentation row's predicted mask, or None (counted) when the row names no
    mask or the submission has none there."""
    mask_path = row.cell("mask_path")
    if not mask_path:
        report.problem(f"{row.where}, field 'mask_path': empty; row left out")
        report.rows_left_out[task_id] += 1
        return None
    path = mask_output_path(pred_dir, mask_path)
    expected_masks.add(os.path.normpath(path))
    if not os.path.exists(path):
        report.rows_without_prediction[task_id] += 1
        return None
    return path


def _read_mask_like(path: str, reference: np.ndarray, row: Row, pred_dir: str, report: Report) -> np.ndarray | None:
    """The predicted mask at `path` at the size of its ground truth (resized as the challenge does, and reported),
    or None (counted) when it is not readable."""
    task_id = row.cell("task_id")
    shown = os.path.relpath(path, pred_dir)
    try:
        predicted = read_predicted_mask(path, shown, report)
    except (OSError, ValueError) as error:
        report.problem(f"{shown}: not readable as an image ({error}); {row.where} not scored")
        report.rows_without_prediction[task_id] += 1
        return None
    if predicted.shape != reference.shape:
        report.problem(f"{shown}: {predicted.shape[1]}x{predicted.shape[0]} but the ground truth of "
                       f"{row.where} is {reference.shape[1]}x{reference.shape[0]} (width x height); "
                       "resized by nearest neighbour, as the challenge does")
        report.resized_masks[task_id] += 1
        predicted = resize_nearest_like_opencv(predicted, *reference.shape)
    return predicted


def _recorded_prediction(row: Row, spec, index: dict, report: Report):
    """A row's prediction from its record in the submission's JSON files, or None (counted) when it has no record
    of its type or the record is malformed."""
    task_id = row.cell("task_id")
    found = index.get((task_id, row.cells.get("image_path", "")))
    if found is None or found[0] != spec.type:
        report.rows_without_prediction[task_id] += 1
        return None
    kind, position, record = found
    value = _record_value(spec, record, f"{PREDICTION_FILES[kind]}, record {position}", report)
    if value is None:
        report.records_left_out[PREDICTION_FILES[kind]] += 1
        report.rows_without_prediction[task_id] += 1
    return value


def score_submission(data_root: str, pred_dir: str, registry=None) -> dict:
    """Score the submission in `pred_dir` against the labelled layout `data_root` (see the module docstring)."""
    specs = {t.id: t for t in (registry or FMC_UIA_TASKS + EXTRA_TASKS)}
    report = Report()
    rows_by_task: dict[str, list[Row]] = defaultdict(list)
    # Rows left out for a CSV problem: their records and masks are reported with the row, not as "matching no row".
    excluded_keys, expected_masks = set(), set()

    def leave_out(row, problem: str):
        report.problem(f"{problem}; row left out")
        report.rows_left_out[row.cell("task_id")] += 1
        excluded_keys.add((row.cell("task_id"), row.cells.get("image_path", "")))
        if row.cell("mask_path"):
            expected_masks.add(os.path.normpath(mask_output_path(pred_dir, row.cell("mask_path"))))

    for row in read_csv_rows(data_root):
        task_id, name = row.cell("task_id"), row.cells.get("task_name", "")
        spec = specs.get(task_id)
        if spec is None:
            leave_out(row, f"{row.where}: unknown task_id {task_id!r}")
            continue
        csv_name = TASK_TYPES[spec.type].csv_name
        if name != csv_name:
            leave_out(row, f"{row.where}, field 'task_name': {name!r}; the challenge spells it {csv_name!r} and scores "
                           "tasks by that exact name")
            continue
        count = row.cell("num_classes")
        expected = training_task_type(spec).csv_count(spec)
        try:
            count_ok = not count or float(count) == expected
        except ValueError:
            count_ok = False
        if not count_ok:
            leave_out(row, f"{row.where}, field 'num_classes': {count!r} but task {task_id!r} has {expected}")
            continue
        rows_by_task[task_id].append(row)

    records = {kind: load_records(pred_dir, kind, report) for kind in PREDICTION_FILES}
    results = {kind: {} for kind in TRAINING_TASK_TYPES}
    # Index every record by (task_id, image_path); a later duplicate replaces an earlier one, as in the challenge.
    index = {}
    for kind, kind_records in records.items():
        for position, record in kind_records:
            key = (record["task_id"], record["image_path"])
            if key in index:
                report.problem(f"{PREDICTION_FILES[kind]}, record {position}: a second record for task "
                               f"{key[0]!r} and image {key[1]!r}; the later one is scored, as in the challenge")
            index[key] = (kind, position, record)

    for task_id, rows in rows_by_task.items():
        spec = specs[task_id]
        predictions, references = [], []
        masks = training_task_type(spec).prediction_file is None  # predicted masks, one file per row
        for row in rows:
            found = (_predicted_mask_path(row, task_id, pred_dir, expected_masks, report) if masks
                     else _recorded_prediction(row, spec, index, report))
            if found is None:
                continue
            reference = _reference(row, spec, data_root, report)
            if reference is None:
                report.rows_left_out[task_id] += 1
                continue
            predicted = _read_mask_like(found, reference, row, pred_dir, report) if masks else found
            if predicted is None:
                continue
            predictions.append(predicted)
            references.append(reference)
        try:
            results[spec.type][task_id] = _task_result(spec, predictions, references, report)
        except ValueError as error:  # a malformed prediction of this task stops only this task
            report.problem(f"task {task_id!r}: cannot be scored ({error})")
            results[spec.type][task_id] = _task_result(spec, [], [], report)

    row_keys = {(task_id, row.cells.get("image_path", "")): specs[task_id].type
                for task_id, rows in rows_by_task.items() for row in rows}
    for key, (kind, position, record) in index.items():
        if row_keys.get(key) != kind and key not in excluded_keys:
            report.problem(f"{PREDICTION_FILES[kind]}, record {position}: task {key[0]!r} and image {key[1]!r} "
                           "match no CSV row; not scored")
            report.records_matching_no_row[PREDICTION_FILES[kind]] += 1
    for folder, _, names in os.walk(pred_dir):
        for name in names:
            path = os.path.normpath(os.path.join(folder, name))
            if name.lower().endswith(".png") and path not in expected_masks:
                report.problem(f"{os.path.relpath(path, pred_dir)}: a mask no segmentation row's mask_path points to")
                report.records_matching_no_row["masks"] += 1

    summary = {}
    for kind, tasks in results.items():
        scored = [r for r in tasks.values() if r["num_samples"] > 0]
        if scored:
            summary[kind] = {name: float(np.mean([r[name] for r in scored]))
                             for name in TRAINING_TASK_TYPES[kind].challenge_figures}
            summary[kind]["num_tasks"] = len(scored)
    out = {kind: tasks for kind, tasks in results.items() if tasks}
    out["summary"] = summary
    out["left_out"] = {
        "rows_without_prediction": dict(sorted(report.rows_without_prediction.items())),
        "rows_left_out": dict(sorted(report.rows_left_out.items())),
        "records_left_out": dict(sorted(report.records_left_out.items())),
        "records_matching_no_row": dict(sorted(report.records_matching_no_row.items())),
        "resized_masks": dict(sorted(report.resized_masks.items())),
    }
    out["num_problems"] = len(report.problems)
    out["problems"] = report.problems[:_MAX_PROBLEMS]
    return out


def _record_value(spec, record: dict, what: str, report: Report):
    """A record's prediction in the metrics' form, or None (reported) when a field is malformed."""
    return training_task_type(spec).record_value(spec, record, what, report)


def _task_result(spec, predictions: list, references: list, report: Report) -> dict:
    """One task's figures in the challenge's layout (num_samples 0 and zeros when nothing was scored)."""
    kind = training_task_type(spec)
    if not references:
        result = dict.fromkeys(kind.challenge_figures, 0.0)
        result["num_samples"] = 0
        if kind.scores_per_class:
            result["per_class"] = {}
        return result
    return kind.score_result(spec, predictions, references, report)


def flat_task_result(result: dict) -> dict[str, float]:
    """A task's scored figures as flat names (`class_1_DSC` for per_class/class_1/DSC), the names
    `m2dino-evaluate` uses in its `metrics`."""
    flat = {name: value for name, value in result.items() if name not in ("per_class", "num_samples")}
    for class_name, figures in (result.get("per_class") or {}).items():
        flat.update({f"{class_name}_{name}": value for name, value in figures.items()})
    return flat


def summary_text(scores: dict) -> str:
    lines = []
    for kind, kind_type in TRAINING_TASK_TYPES.items():
        names = kind_type.challenge_figures
        tasks = scores.get(kind)
        if not tasks:
            continue
        lines.append(f"[{kind}]")
        for task_id, result in tasks.items():
            figures = ", ".join(f"{name}={result[name]:.4f}" for name in names)
            lines.append(f"  {task_id}: {figures}, samples={result['num_samples']}")
        if kind in scores["summary"]:
            average = scores["summary"][kind]
            lines.append("  average over {} task(s): {}".format(
                average["num_tasks"], ", ".join(f"{name}={average[name]:.4f}" for name in names)))
    left_out = {name: counts for name, counts in scores["left_out"].items() if counts}
    if left_out:
        lines.append("not scored: " + "; ".join(f"{name.replace('_', ' ')} {counts}" for name, counts in left_out.items()))
    if scores["num_problems"]:
        lines.append(f"{scores['num_problems']} problem(s); the first ones:")
        lines += [f"  {problem}" for problem in scores["problems"][:20]]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Score a submission folder as the FMC_UIA challenge does.")
    parser.add_argument("--data", required=True, help="labelled challenge layout (the folder holding csv_files/)")
    parser.add_argument("--predictions", required=True, help="submission folder (prediction JSON files and masks)")
    parser.add_argument("--output", help="write the scores JSON here")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.predictions):
        raise SystemExit(f"--predictions {args.predictions!r} is not a folder")
    try:
        scores = score_submission(args.data, args.predictions)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from error
    from .cli import print_and_write

    print_and_write(summary_text(scores), scores, args.output)
    return scores


if __name__ == "__main__":
    main()
