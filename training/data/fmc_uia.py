"""Reader for the FMC_UIA challenge layout: CSV index files + images/masks -> a `datasets.Dataset`.

Layout (the organisers' folder, described in docs/data_layout.md)::

    <root>/csv_files/*.csv        rows of all tasks, any order; paths relative to csv_files/
    <root>/Segmentation/... <root>/Classification/... <root>/Detection/... <root>/Regression/...

or ``<root>/train/`` and ``<root>/val/`` (and optionally ``test/``), each such a layout: those are then the
splits. Otherwise a seeded, per-task stratified split is drawn (see `load_fmc_uia`).

Every row is checked when the data is loaded (image and mask decoded in full, so a truncated or corrupt
file is found here and not mid-training), because the public baseline silently swaps an unreadable image
for the next row, and a trustworthy loader must not hide that: a problem either stops loading with a
message naming the CSV file, its line and the field, or (with ``on_error="skip"``) the row is dropped,
counted per task and reported in the dataset's ``info``. Across rows: the same image (identical decoded
pixels, whatever its path) listed twice for a task with the same labels is kept once (counted, with a
warning); with different labels, or in two splits, it is a problem naming both rows. A CSV file that is
not UTF-8 text, or holds no rows, is named as such.

The returned datasets store paths and labels in columns and decode lazily through a transform
(`stored_column` reads a column without decoding anything); each example is a dict::

    image         PIL.Image (8-bit PNG/JPG) or numpy uint16/uint8 array (16-bit PNG, DICOM)
    task          task id
    label         int (classification) or None
    mask          (H, W) uint8 class indices (segmentation) or None
    boxes         float32 (n, 4) x_min, y_min, x_max, y_max in pixels (detection) or None
    class_labels  int64 (n,) (detection) or None
    points        float32 (P, 2) x, y in pixels (regression) or None
    values        float32 (V,) one value per label, from the `value_<label>` columns (measurement) or None
    bits_stored   significant bits of an array image (DICOM, 16-bit PNG), None for PIL images
    source        "<csv file relative to root>:<line>"
    image_path, mask_path           the files read: the CSV's paths joined to its csv_files/ folder
    csv_image_path, csv_mask_path   the CSV's cells verbatim (the keys of a challenge submission)

Test-time folders whose CSVs carry no labels load with ``require_labels=False`` (label fields None).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import datasets

from modeling_m2dino.task_types import TASK_TYPES
from modeling_m2dino.tasks import TaskSpec

from ..task_types import training_task_type
from .checks import (
    LABEL_CHECKS,
    MAX_REPORTED_PROBLEMS,
    DataError,
    RowProblem,
    check_task_names,
    class_problem,
    decode_image,
    decode_in_full,
    decode_label_arrays,
    image_header,
    read_mask,
    registry_by_id,
    stored_column,  # noqa: F401  (public here before the checks had a module of their own)
    stored_label_features,
)

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_ALIASES = {"validation": "val", "valid": "val"}
# Cells pandas or spreadsheets write for "no value".
_EMPTY_CELLS = {"", "nan", "none", "null"}

FEATURES = datasets.Features(
    {
        "image_path": datasets.Value("string"),
        "task": datasets.Value("string"),
        **stored_label_features(),  # mask_path, label, boxes, class_labels, points: each task type's columns
        "bits_stored": datasets.Value("int32"),
        "source": datasets.Value("string"),
        # the CSV's image_path / mask_path cells verbatim: the keys of a challenge submission
        "csv_image_path": datasets.Value("string"),
        "csv_mask_path": datasets.Value("string"),
    }
)
LABEL_FIELDS = tuple(stored_label_features())


class FMCUIADataError(DataError):
    """A problem in one CSV row. `csv_file`, `line` (header = 1), `field` and `problem` say where and what;
    `more` counts the other rows with problems. A problem of a whole file has `field` None (and `line`
    None when no line is to blame)."""

    def __init__(self, csv_file: str, line: int | None, field: str | None, problem: str, more: int = 0):
        self.csv_file, self.line = csv_file, line
        super().__init__(csv_file if line is None else f"{csv_file}, line {line}", field, problem, more)


@dataclass
class _Row:
    csv_file: str  # as shown in messages: the CSV path under the root the caller gave
    source: str  # "<csv path relative to root>:<line>"
    line: int
    order: tuple  # (split index, file index, line): file/line order across the whole load
    csv_dir: str
    cells: dict
    extra_cells: int = 0
    split: str | None = None
    # filled by _check_row
    problem: RowProblem | None = None
    values: dict = field(default_factory=dict)
    pixel_digest: str | None = None  # of the decoded image: "the same image" whatever its path or format
    task_type: str | None = None
    label_digest: str | None = None  # of labels kept in files (a mask), to tell two rows' labels apart
    decode_seconds: float = 0.0
    repeats: "_Row | None" = None  # the earlier row this one duplicates exactly

    def cell(self, name: str, required: bool = True) -> str | None:
        """A stripped cell value; None when empty. Missing columns and empty required cells are problems."""
        if name not in self.cells:
            if required:
                raise RowProblem(name, f"column '{name}' is missing from the CSV header")
            return None
        value = self.cells[name].strip()
        if value.lower() in _EMPTY_CELLS:
            if required:
                raise RowProblem(name, "empty")
            return None
        return value


class ExampleDecoder:
    """The datasets transform: stored columns -> the example schema (images and masks read from disk).

    A batch of a single column (``dataset.select_columns(["task"])``) comes back as stored. Note that
    ``dataset["task"]`` on a transformed dataset decodes every row in `datasets` 4+: use
    `stored_column(dataset, "task")` to read a column without touching any image.
    """

    def __init__(self, dicom_frame="middle"):
        self.dicom_frame = dicom_frame

    def __call__(self, batch: dict) -> dict:
        if len(batch) == 1:
            return batch
        out = {}
        if "image_path" in batch:
            decoded = [self._decode(path, source) for path, source in zip(batch["image_path"], self._sources(batch))]
            out["image"] = [image for image, _ in decoded]
        for key in ("task", "label"):
            if key in batch:
                out[key] = batch[key]
        if "mask_path" in batch:
            out["mask"] = [read_mask(path) if path else None for path in batch["mask_path"]]
        out.update(decode_label_arrays(batch))
        if "image_path" in batch:
            out["bits_stored"] = [bits for _, bits in decoded]  # what was decoded, not what the header said
        elif "bits_stored" in batch:
            out["bits_stored"] = batch["bits_stored"]
        for key in ("source", "image_path", "mask_path", "csv_image_path", "csv_mask_path"):
            if key in batch:
                out[key] = batch[key]
        return out

    @staticmethod
    def _sources(batch: dict) -> list:
        return batch.get("source") or [None] * len(batch["image_path"])

    def _decode(self, path: str, source: str | None):
        try:
            return decode_image(path, self.dicom_frame)
        except Exception as error:  # every row decoded when loading: the file changed on disk since
            where = f" (CSV row {source})" if source else ""
            raise OSError(f"cannot decode image {path}{where}: {error}; it decoded when the data was loaded") from error


# ------------------------------------------------------------------------------------------------------
# Reading the CSV files


def _find_layouts(root: str) -> dict[str | None, str]:
    """{split: folder} for train/val(/test) subfolders, or {None: root} for a single layout."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"FMC_UIA root {root!r} is not a folder")
    subsplits = {name: os.path.join(root, name) for name in SPLIT_NAMES if os.path.isdir(os.path.join(root, name, "csv_files"))}
    if "train" in subsplits and "val" in subsplits:
        return subsplits
    if os.path.isdir(os.path.join(root, "csv_files")):
        return {None: root}
    raise FileNotFoundError(
        f"{root!r} is not an FMC_UIA layout: expected {os.path.join(root, 'csv_files')}/*.csv, "
        f"or train/csv_files/ and val/csv_files/ under it"
    )


def _read_csv_text(path: str) -> str:
    """The text of a CSV file: UTF-8, with or without a byte-order mark. Any other encoding is refused with the
    line and column of the first byte that is not UTF-8, rather than guessed at (a wrong guess changes paths)."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FMCUIADataError(path, None, None, "is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8 CSV")
    try:
        return data.decode("utf-8-sig")  # spreadsheet exports often start with a byte-order mark
    except UnicodeDecodeError as error:
        text_before = data[: error.start].decode("utf-8-sig")
        line = text_before.count("\n") + 1
        column = None
        if line > 1:  # the header names the column: count the cells of the line up to the bad byte
            header = next(csv.reader([text_before.split("\n", 1)[0]]), [])
            cells_before = next(csv.reader([text_before.rsplit("\n", 1)[-1]]), [""])
            index = max(len(cells_before) - 1, 0)
            column = header[index].strip() if index < len(header) else None
        raise FMCUIADataError(
            path, line, column,
            f"is not UTF-8 text: byte 0x{data[error.start]:02x} cannot be decoded (saved as Latin-1 or Windows-1252?); "
            f"re-save the file as UTF-8, e.g. `iconv -f cp1252 -t utf-8`",
        ) from None  # fmt: skip


def _read_rows(root: str, folder: str, split_index: int, on_error: str, empty_files: list[str]) -> list[_Row]:
    """The rows of every CSV file in ``<folder>/csv_files``. A file with no rows is an error (it would silently
    remove its tasks), or with on_error="skip" a warning; it is appended to `empty_files` either way."""
    csv_dir = os.path.join(folder, "csv_files")
    names = sorted(name for name in os.listdir(csv_dir) if name.lower().endswith(".csv"))
    if not names:
        raise FileNotFoundError(f"no .csv files in {csv_dir}")
    rows = []
    for file_index, name in enumerate(names):
        path = os.path.join(csv_dir, name)
        relative = os.path.relpath(path, root).replace(os.sep, "/")
        reader = csv.reader(io.StringIO(_read_csv_text(path), newline=""))
        header = [column.strip() for column in next(reader, [])]
        duplicates = [column for column, count in Counter(header).items() if count > 1]
        if duplicates:
            raise FMCUIADataError(path, 1, duplicates[0], "column appears more than once in the header")
        file_rows = []
        while True:
            line = reader.line_num + 1  # where the next record starts (a quoted cell may span lines)
            cells = next(reader, None)
            if cells is None:
                break
            if not any(cell.strip() for cell in cells):
                continue
            file_rows.append(
                _Row(
                    csv_file=path,
                    source=f"{relative}:{line}",
                    line=line,
                    order=(split_index, file_index, line),
                    csv_dir=csv_dir,
                    # a short row's missing cells are empty, so they are reported as "empty"
                    cells=dict(zip(header, cells + [""] * (len(header) - len(cells)))),
                    extra_cells=max(0, len(cells) - len(header)),
                )
            )
        if not file_rows:
            problem = "has a header but no rows" if any(header) else "is empty (no header, no rows)"
            if on_error == "raise":
                raise FMCUIADataError(path, None, None, f"{problem}; remove the file or fill it (on_error='skip' skips it)")
            logger.warning("FMC_UIA: skipped CSV file %s: it %s", path, problem)
            empty_files.append(path)
        rows += file_rows
    return rows


def _task_id(row: _Row) -> str:
    return row.cells.get("task_id", "").strip()


# ------------------------------------------------------------------------------------------------------
# The seeded split


def _rank(seed: int, task: str, row: _Row) -> str:
    """A seeded pseudo-random rank from the row's own content: the lowest ranks of a class go to
    validation, so adding, removing or reordering other rows barely changes who is where."""
    key = f"{seed}\0{task}\0{row.cells.get('image_path', '').strip()}\0{row.cells.get('mask_path', '').strip()}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _class_key(text: str) -> str:
    """A classification row's stratum: "1" and "1.0" are the same class; anything unparseable stands alone."""
    try:
        number = float(text)
    except ValueError:
        return text.strip()
    return str(int(number)) if number.is_integer() else text.strip()


def _assign_splits(rows: list[_Row], by_id: dict[str, TaskSpec], val_fraction: float, seed: int) -> dict:
    """Give every row a split, per task and (for classification) per class; returns per-task counts.

    Runs over ALL rows, valid or not, before anything is skipped, so skipping bad rows never moves a good
    row; it depends only on the rows' tasks, classes and paths, so filtering tasks or reordering and
    re-splitting the CSV files changes nothing either.
    """
    strata: dict[str, dict[str, list[_Row]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        task = _task_id(row)
        spec = by_id.get(task)
        stratified = spec is not None and training_task_type(spec).class_per_image
        stratum = _class_key(row.cells.get("mask", "")) if stratified else ""
        strata[task][stratum].append(row)
    counts = {}
    for task in sorted(strata):
        classes = strata[task]
        total = sum(len(members) for members in classes.values())
        n_val = round(total * val_fraction)
        if val_fraction > 0 and total >= 2:
            n_val = min(max(n_val, 1), total - 1)  # both splits see every task that has two rows
        # Largest-remainder apportionment keeps each class's share of the validation rows proportional.
        keys = sorted(classes)
        exact = {key: len(classes[key]) * n_val / total for key in keys}
        quota = {key: math.floor(exact[key]) for key in keys}
        for key in sorted(keys, key=lambda k: (-(exact[k] - quota[k]), k))[: n_val - sum(quota.values())]:
            quota[key] += 1
        for key in keys:
            members = sorted(classes[key], key=lambda row: (_rank(seed, task, row), row.source))
            # A row listed twice has one rank: both copies go to one split (and are then found as duplicates).
            split_of_rank = {}
            for row in members:
                rank = _rank(seed, task, row)
                if rank not in split_of_rank:
                    split_of_rank[rank] = "val" if len(split_of_rank) < quota[key] else "train"
                row.split = split_of_rank[rank]
        assigned = Counter(row.split for members in classes.values() for row in members)
        counts[task] = {"train": assigned["train"], "val": assigned["val"]}
    return counts


# ------------------------------------------------------------------------------------------------------
# Checking one row


def _resolve(csv_dir: str, value: str) -> str:
    if os.sep == "/":
        value = value.replace("\\", "/")  # CSVs written on Windows
    return os.path.normpath(os.path.join(csv_dir, value))


def _parse_number(row: _Row, name: str) -> float:
    text = row.cell(name)
    try:
        value = float(text)
    except ValueError:
        raise RowProblem(name, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise RowProblem(name, f"{text!r} is not a finite number")
    return value


def _parse_class(row: _Row, name: str, spec: TaskSpec) -> int:
    text = row.cell(name)
    try:
        number = float(text)
    except ValueError:
        raise RowProblem(name, f"class {text!r} is not an integer") from None
    if not number.is_integer():  # pandas writes integer columns with NaNs as "1.0"; 1.5 is no class
        raise RowProblem(name, f"class {text!r} is not an integer")
    problem = class_problem(int(number), spec)
    if problem:
        raise RowProblem(name, problem)
    return int(number)


def _parse_point(row: _Row, name: str) -> list[float]:
    text = row.cell(name)
    try:
        value = json.loads(text.replace("(", "[").replace(")", "]"))
        point = [float(value[0]), float(value[1])]
        if len(value) != 2:
            raise ValueError
    except (ValueError, TypeError, IndexError, KeyError):
        raise RowProblem(name, f"{text!r} is not a point [x, y]") from None
    return point


def _parse_labels(row: _Row, spec: TaskSpec) -> dict:
    """Label fields from the CSV cells alone (no file is opened)."""
    values = dict.fromkeys(LABEL_FIELDS)
    values.update(training_task_type(spec).parse_csv_labels(row, spec, _CELL_PARSERS))
    return values


# The cell parsers a type's `parse_csv_labels` reads a row with.
_CELL_PARSERS = SimpleNamespace(resolve=_resolve, parse_number=_parse_number, parse_class=_parse_class,
                                parse_point=_parse_point, RowProblem=RowProblem)


def _check_num_classes(row: _Row, spec: TaskSpec) -> None:
    """The challenge writes `num_classes` on every row (the point count on regression rows); when present it
    must agree with the registry, or the row belongs to another task definition than the one trained."""
    count = row.cell("num_classes", required=False)
    if count is None:
        return
    kind = training_task_type(spec)
    expected = kind.csv_count(spec)
    what = kind.count_nouns[1]
    try:
        value = float(count)
    except ValueError:
        raise RowProblem("num_classes", f"{count!r} is not a number of {what}") from None
    if value != expected:
        raise RowProblem("num_classes", f"row says {count} {what} but task '{spec.id}' has {expected} in the registry")


def _check_row(row: _Row, by_id: dict[str, TaskSpec], dicom_frame, require_labels: bool = True) -> _Row:
    """Parse and check one row, reading its image header and mask; records `values` or `problem`.

    Without `require_labels` (test-time folders) no label cell is read and no mask file is opened; the
    label fields are None and `mask_path` only says where a predicted mask goes."""
    try:
        if row.extra_cells:
            raise RowProblem("row", f"{row.extra_cells} more cell(s) than the header has columns (an unquoted comma?)")
        task = row.cell("task_id")
        spec = by_id.get(task)
        if spec is None:
            raise RowProblem("task_id", f"unknown task_id {task!r}; valid task ids: {', '.join(by_id)}")
        if "task_name" in row.cells:  # redundant with the registry, so it must agree when present
            name = row.cell("task_name")
            if name.lower() != spec.type:
                raise RowProblem(
                    "task_name",
                    f"{name!r} disagrees with the registry: task '{task}' is a {spec.type} task "
                    f"(written {TASK_TYPES[spec.type].csv_name!r})",
                )
        _check_num_classes(row, spec)
        row.task_type = spec.type
        image_path = _resolve(row.csv_dir, row.cell("image_path"))
        if require_labels:
            values = _parse_labels(row, spec)
        else:
            values = dict.fromkeys(LABEL_FIELDS)
        try:
            width, height, bits = image_header(image_path, dicom_frame)
        except FileNotFoundError:
            raise RowProblem("image_path", f"image file not found: {image_path}") from None
        except Exception as error:  # any failure to read a file is this row's problem, never the whole load's
            raise RowProblem("image_path", str(error) or f"{type(error).__name__} reading {image_path}") from None
        try:
            row.pixel_digest, row.decode_seconds = decode_in_full(image_path, dicom_frame)
        except Exception as error:
            raise RowProblem("image_path", f"cannot decode image {image_path}: {error or type(error).__name__}") from None
        if require_labels:
            row.label_digest = training_task_type(spec).check_in_image(values, spec, width, height, LABEL_CHECKS)
        row.values = dict(values, task=task, image_path=image_path, bits_stored=bits, source=row.source,
                          csv_image_path=row.cells["image_path"], csv_mask_path=row.cells.get("mask_path") or None)
    except RowProblem as problem:
        row.problem = problem
    return row


def _check_rows(rows: list[_Row], by_id, dicom_frame, num_workers, require_labels: bool = True) -> list[_Row]:
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(rows) < 2:
        return [_check_row(row, by_id, dicom_frame, require_labels) for row in rows]
    # Threads suffice: image decoding (PIL/zlib) releases the GIL, and rows share nothing.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda row: _check_row(row, by_id, dicom_frame, require_labels), rows))


def _label_difference(first: _Row, second: _Row) -> tuple[str, str] | None:
    """(field, description) of the first label that differs between two rows of one task, or None."""
    return training_task_type(first.task_type).label_difference(first.values, second.values, first.label_digest, second.label_digest)


def _check_repeated_images(rows: list[_Row]) -> list[_Row]:
    """Find images listed more than once for a task ("the same" = identical decoded pixels, whatever the path).

    In two splits: a problem on every such row (a validation image seen in training inflates every metric).
    Twice in one split with different labels: a problem on both rows (which label is right is unknowable).
    Twice with the same labels: the later rows are returned, to be dropped and counted.
    """
    groups: dict[tuple, list[_Row]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row.order):
        if row.problem is None:
            groups[(row.values["task"], row.pixel_digest)].append(row)
    repeated = []
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0]
        other_split = next((row for row in members if row.split != first.split), None)
        if other_split is not None:
            for row in members:
                other = other_split if row.split == first.split else first
                row.problem = RowProblem(
                    "image_path",
                    f"the same image (identical pixels) is in split '{row.split}' here and in split '{other.split}' at "
                    f"{other.csv_file}, line {other.line} ({other.values['image_path']}); an image in two splits leaks "
                    f"into validation: keep it in one",
                )
            continue
        clash = next((row for row in members[1:] if _label_difference(first, row)), None)
        if clash is not None:
            for row in members:
                other = clash if _label_difference(first, row) is None else first
                name, what = _label_difference(other, row)
                row.problem = RowProblem(
                    name,
                    f"the same image (identical pixels) is listed for task '{row.values['task']}' at "
                    f"{other.csv_file}, line {other.line} with other labels ({what}); keep one row",
                )
            continue
        for row in members[1:]:
            row.repeats = first
        repeated += members[1:]
    return sorted(repeated, key=lambda row: row.order)


def _error(row: _Row, more: int = 0) -> FMCUIADataError:
    return FMCUIADataError(row.csv_file, row.line, row.problem.field, row.problem.problem, more)


# ------------------------------------------------------------------------------------------------------
# Public entry points



def load_report(dataset) -> dict:
    """The loading report a loader stored in ``dataset.info.description`` (JSON) as a dict."""
    return json.loads(dataset.info.description or "{}")


def format_load_report(report: dict) -> str:
    """A few lines for people: rows per split, what was skipped or dropped, and what checking cost."""
    where = report.get("root") or report.get("path")
    lines = [f"loaded {where}: " + ", ".join(f"{name} {sum(tasks.values())} rows" for name, tasks in report["rows"].items())]
    if report.get("num_skipped"):
        lines.append(f"  skipped {report['num_skipped']} row(s) with problems; first: {report['problems'][0]}")
    if report.get("skipped_csv_files"):
        lines.append(f"  skipped CSV file(s) without rows: {', '.join(report['skipped_csv_files'])}")
    duplicates = sum(sum(tasks.values()) for tasks in report.get("duplicates_dropped", {}).values())
    if duplicates:
        lines.append(f"  dropped {duplicates} duplicate row(s); first: {report['duplicate_rows'][0]}")
    check = report.get("check")
    if check:
        line = f"  checked {check['rows']} row(s) in {check['wall_seconds']:.1f} s with {check['workers']} thread(s)"
        if "decode_seconds" in check:
            per_image = 1000 * check["decode_seconds"] / max(check["images_decoded"], 1)
            line += f"; full image decode {check['decode_seconds']:.1f} s of thread time ({per_image:.1f} ms per image)"
        else:
            line += ", every image decoded in full"
        lines.append(line)
    return "\n".join(lines)


def _build_dataset(rows: list[_Row], split: str, report: dict, dicom_frame) -> datasets.Dataset:
    columns = {name: [row.values[name] for row in rows] for name in FEATURES}
    info = datasets.DatasetInfo(description=json.dumps(dict(report, split_name=split), sort_keys=True), features=FEATURES)
    dataset = datasets.Dataset.from_dict(columns, features=FEATURES, info=info, split=datasets.NamedSplit(split))
    return dataset.with_transform(ExampleDecoder(dicom_frame))


def load_fmc_uia(
    root,
    split: str | None = None,
    tasks=None,
    on_error: str = "raise",
    registry=None,
    val_fraction: float = 0.2,
    seed: int = 0,
    num_workers: int | None = None,
    dicom_frame="middle",
    require_labels: bool = True,
):
    """Read the organisers' FMC_UIA layout under `root` (docs/data_layout.md) into `datasets`, checking every row.

    What it reads: every ``*.csv`` file in ``<root>/csv_files/`` (UTF-8, a header row naming the columns), or
    in ``<root>/train/csv_files/`` and ``<root>/val/csv_files/`` (and ``<root>/test/csv_files/`` when present),
    which are then the splits. Each row is one image of one task: ``image_path`` and ``task_id`` always, the
    label columns of the task's type (``mask_path``, ``mask``, ``x_min``..``y_max``, ``point_<k>_xy``,
    ``value_<label>``), and ``task_name`` / ``num_classes`` when present, which must agree with the registry.
    Paths are relative to the CSV's ``csv_files/`` folder. Every image (and mask) a checked row names is
    decoded in full while loading; nothing is written into `root`.

    Args:
        root: the layout's folder (str or path-like).
        split: None for every split, or "train" / "val" ("validation" and "valid" work too) / "test" for one.
            The splits are the folders found, or "train" and "val" for a root with ``csv_files/`` only.
        tasks: task ids to keep (a str or an iterable; None: every task present). Rows of other tasks are
            ignored unchecked, rows whose task is not in the registry included (counted in a warning).
        on_error: "raise" stops at the first row problem in file/line order (the message counts the rest);
            "skip" drops bad rows (and CSV files without rows), logs a warning and records per-task counts
            in the report.
        registry: list of `TaskSpec` to check the rows against (default: the 27 FMC_UIA tasks and
            `EXTRA_TASKS`), so labs can add tasks.
        val_fraction, seed: for a root with ``csv_files/`` only, each task's rows are split by a seeded draw
            (`val_fraction` of them to "val"), stratified by class for classification, with at least one row
            per split for any task that has two. The draw covers every CSV row before any is skipped and
            depends only on each row's task, class and paths, so it is stable under skipping, task filtering
            and CSV reordering. Ignored when the root has split folders.
        num_workers: threads for checking rows (default: the CPU count; 0 or 1 checks in this thread).
        dicom_frame: which frame a multi-frame DICOM row yields ("middle" by default, or an int); each
            DICOM row is one example.
        require_labels: False for test-time folders whose CSVs carry only ``image_path``, ``task_id``,
            ``task_name`` (and ``mask_path``, where a predicted mask goes): no label is read and no mask is
            opened, the label fields are None. A present ``num_classes`` is still checked against the registry.

    Returns:
        A `datasets.Dataset` (`split` given) or a `datasets.DatasetDict` keyed by split name, one example per kept row
        in CSV file (by name) and line order, decoded on access into the schema in this module's docstring (image,
        task, label fields, source). A row repeated with the same image and labels is kept once. The loading report
        (split parameters and counts, rows kept, rows skipped per task, the first problems, CSV files skipped for
        holding no rows, duplicate rows dropped, and what the check cost: ``check``) is JSON in
        ``dataset.info.description``; `load_report(dataset)` parses it and `format_load_report` prints it. With
        `split` given, only that split's rows are checked, so an image in two splits is found only when all splits are
        loaded.

    Raises:
        FMCUIADataError: a problem in the data (a `DataError`, itself a ValueError). Its message and attributes
            name the CSV file (`csv_file`), the line (`line`, the header is line 1), the column (`field`) and the
            `problem`, and count the other bad rows (`more`). Row problems: an unknown ``task_id``, a ``task_name`` or
            ``num_classes`` that disagrees with the registry, a missing column or empty cell the task needs, a
            cell that does not parse, more cells than the header, a missing or undecodable image or mask, a
            mask, box or point that does not fit its image or task, the same image in two splits or listed
            twice with other labels (naming the other row); with ``on_error="skip"`` these rows are dropped
            instead. Problems of a whole file raise whatever `on_error` says: a CSV file that is UTF-16 (`line`
            and `field` None) or not UTF-8 (the line, and the column when known, of the first bad byte), or a
            header naming a column twice (line 1, that column). A CSV file with no rows (`line` and `field`
            None) raises unless ``on_error="skip"``.
        FileNotFoundError: `root` is not a folder, holds no ``csv_files/`` (nor ``train/`` and ``val/`` ones),
            or a ``csv_files/`` folder holds no ``.csv`` file.
        ValueError: an `on_error` other than "raise" / "skip", a `val_fraction` outside [0, 1), a `split` the
            layout does not have (the message lists those it has), a `tasks` id the registry does not know
            (the message lists the valid ids), or a task id listed twice in `registry`.
        TypeError: a `registry` entry that is not a `TaskSpec`.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    by_id = registry_by_id(registry)
    wanted = check_task_names(tasks, by_id)
    root = os.fspath(root)
    layouts = _find_layouts(root)
    folder_splits = None not in layouts
    available = list(layouts) if folder_splits else ["train", "val"]
    if split is not None:
        split = _SPLIT_ALIASES.get(split, split)
        if split not in available:
            raise ValueError(f"unknown split {split!r}; this dataset has: {', '.join(available)}")

    split_config = None
    empty_files: list[str] = []
    if folder_splits:
        rows = []
        for index, name in enumerate(layouts):
            if split is None or split == name:
                part = _read_rows(root, layouts[name], index, on_error, empty_files)
                for row in part:
                    row.split = name
                rows += part
    else:
        rows = _read_rows(root, root, 0, on_error, empty_files)
        counts = _assign_splits(rows, by_id, val_fraction, seed)
        split_config = {
            "seed": seed,
            "val_fraction": val_fraction,
            "method": "per task, stratified by class for classification, over all CSV rows before skipping",
            "counts": counts,
        }

    splits = [split] if split is not None else available
    # Rows of tasks not asked for (a model serving fewer tasks than the folder holds): counted per split and task.
    left_out = {name: dict(sorted(Counter(_task_id(row) for row in rows if row.split == name and wanted is not None
                                          and _task_id(row) not in wanted).items())) for name in splits}
    if wanted is not None:
        ignored_unknown = sum(1 for row in rows if _task_id(row) not in by_id)
        if ignored_unknown:
            logger.warning("FMC_UIA %s: ignored %d row(s) whose task_id is not in the registry", root, ignored_unknown)
        rows = [row for row in rows if _task_id(row) in wanted]
    if split is not None:  # one split asked for: only its rows are checked (images in two splits are not looked for)
        rows = [row for row in rows if row.split == split]

    started = time.perf_counter()
    rows = _check_rows(rows, by_id, dicom_frame, num_workers, require_labels)
    check_seconds = time.perf_counter() - started
    repeated = _check_repeated_images(rows)
    bad = sorted((row for row in rows if row.problem is not None), key=lambda row: row.order)
    if bad and on_error == "raise":
        raise _error(bad[0], more=len(bad) - 1)

    dropped = set(map(id, repeated))
    kept = {name: [row for row in rows if row.problem is None and row.split == name and id(row) not in dropped]
            for name in splits}  # fmt: skip
    decoded = [row for row in rows if row.pixel_digest is not None]
    skipped = {name: dict(sorted(Counter(_task_id(row) for row in bad if row.split == name).items())) for name in splits}
    report = {
        "loader": "fmc_uia",
        "root": os.path.abspath(root),
        "split_source": "folders" if folder_splits else "seeded",
        "split_config": split_config,
        "dicom_frame": dicom_frame,
        "tasks": sorted(wanted) if wanted is not None else None,
        "left_out": left_out,
        "labels": require_labels,
        "rows": {name: dict(sorted(Counter(row.values["task"] for row in kept[name]).items())) for name in splits},
        "skipped": skipped,
        "num_skipped": len(bad),
        "problems": [str(_error(row)) for row in bad[:MAX_REPORTED_PROBLEMS]],
        "skipped_csv_files": [os.path.relpath(path, root).replace(os.sep, "/") for path in empty_files],
        "duplicates_dropped": {
            name: dict(sorted(Counter(row.values["task"] for row in repeated if row.split == name).items())) for name in splits
        },
        "duplicate_rows": [
            f"{row.csv_file}, line {row.line} repeats {row.repeats.csv_file}, line {row.repeats.line} (task "
            f"'{row.values['task']}', same image and labels)"
            for row in repeated[:MAX_REPORTED_PROBLEMS]
        ],
        # The rows of every split are checked, in threads: decode_seconds adds up the threads' time.
        "check": {
            "rows": len(rows),
            "images_decoded": len(decoded),
            "decode_seconds": round(sum(row.decode_seconds for row in decoded), 3),
            "wall_seconds": round(check_seconds, 3),
            "workers": num_workers if num_workers is not None else (os.cpu_count() or 1),
        },
    }
    if repeated:
        logger.warning(
            "FMC_UIA %s: dropped %d duplicate row(s) (the same image with the same labels listed again); first: %s",
            root, len(repeated), report["duplicate_rows"][0],
        )  # fmt: skip
    logger.info("%s", format_load_report(report))
    if bad:
        per_task = Counter(_task_id(row) for row in bad)
        logger.warning(
            "FMC_UIA %s: skipped %d row(s) with problems (per task: %s); first: %s",
            root, len(bad), dict(sorted(per_task.items())), report["problems"][0],
        )  # fmt: skip
    if wanted is not None:
        for name in splits:
            missing = sorted(wanted - set(report["rows"][name]))
            if missing:
                logger.warning("FMC_UIA %s: split %r has no rows for task(s) %s", root, name, missing)

    built = {name: _build_dataset(kept[name], name, report, dicom_frame) for name in splits}
    return built[split] if split is not None else datasets.DatasetDict(built)
