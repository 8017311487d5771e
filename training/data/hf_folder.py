"""Reader for `datasets` folders (written with ``save_to_disk``) in the project's example schema, and
`load_data`, which picks the right reader for a folder.

A folder holds a Dataset or a DatasetDict with the columns ``image`` (a `datasets.Image`, an array, or a
file path), ``task``, and as the tasks need them ``label``, ``mask`` (a `datasets.Image`, an array or a
path), ``boxes``, ``class_labels``, ``points`` (optional ``bits_stored``, ``source``). Rows are checked
the same way as challenge CSV rows (every image decoded in full; the same image listed twice or in two
splits found), with the row index and the field in each message; the result is the
same kind of object `load_fmc_uia` returns, with examples in the same schema.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import datasets
import numpy as np
from PIL import Image

from ..task_types import TRAINING_TASK_TYPES, training_task_type
from .checks import (
    IMAGE_MODES,
    LABEL_CHECKS,
    MAX_REPORTED_PROBLEMS,
    WIDE_MODES,
    DataError,
    RowProblem,
    check_task_names,
    decode_image,
    decode_label_arrays,
    image_header,
    mask_to_array,
    pixel_digest,
    read_mask,
    registry_by_id,
    stored_column,
    to_uint16,
)
from .fmc_uia import load_fmc_uia

logger = logging.getLogger(__name__)

_SPLIT_ALIASES = {"val": ("validation", "valid"), "validation": ("val", "valid")}
_CHUNK = 64
# The label columns of a datasets folder: each task type's example label fields (mask, label, boxes, ...).
LABEL_FIELDS = tuple(dict.fromkeys(name for kind in TRAINING_TASK_TYPES.values() for name in kind.example_features))


class HFFolderDataError(DataError):
    """A problem in one row of a datasets folder: `path`, `split`, `row` (0-based index), `field`."""

    def __init__(self, path: str, split: str, row: int, field: str, problem: str, more: int = 0):
        self.path, self.split, self.row = path, split, row
        super().__init__(f"{path} [split '{split}'], row {row}", field, problem, more)


# ------------------------------------------------------------------------------------------------------
# Reading stored values


def _open_stored_image(value):
    """A PIL image from an undecoded `datasets.Image` value ({"bytes", "path"})."""
    if value.get("bytes") is not None:
        return Image.open(io.BytesIO(value["bytes"]))
    return Image.open(value["path"])


def _image_info(value, field: str) -> tuple[int, int, str]:
    """(width, height, pixel digest) of a stored image value: an undecoded Image dict, an array, or a file path.
    Encoded images are decoded in full: a header can be intact while the pixel data is truncated or corrupt."""
    try:
        if isinstance(value, dict):
            with _open_stored_image(value) as image:
                if image.mode not in IMAGE_MODES:
                    raise ValueError(f"unsupported image mode {image.mode!r}")
                image.load()
                return image.size + (pixel_digest(image),)
        if isinstance(value, str):
            width, height, _ = image_header(value)
            image, _ = decode_image(value)
            return width, height, pixel_digest(image)
        array = np.asarray(value)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3)):
            raise ValueError(f"array of shape {array.shape} is not an (H, W) or (H, W, 3) image")
        return array.shape[1], array.shape[0], pixel_digest(array)
    except FileNotFoundError as error:
        raise RowProblem(field, f"file not found: {error.filename or value}") from None
    except (ValueError, OSError, ImportError) as error:
        raise RowProblem(field, f"cannot read image: {error}") from None


def _stored_mask(value) -> np.ndarray:
    """A stored mask value (undecoded Image dict, path, decoded PIL image or array) as (H, W) uint8."""
    if isinstance(value, dict):
        with _open_stored_image(value) as image:
            image.load()
            return mask_to_array(image)
    if isinstance(value, str):
        return read_mask(value)
    if isinstance(value, Image.Image):
        return mask_to_array(value)
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"mask array has shape {array.shape}; masks are (H, W) class indices")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"mask values {array.min()}..{array.max()} do not fit 8-bit class indices")
    return array.astype(np.uint8)


def _matrix(value, columns: int, field: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RowProblem(field, f"{value!r} is not a list of numbers") from None
    if array.ndim != 2 or array.shape[1] != columns:
        raise RowProblem(field, f"expected shape (n, {columns}), got {array.shape}")
    if not np.isfinite(array).all():
        raise RowProblem(field, "holds a non-finite number")
    return array


# The label checks a type's `check_folder_labels` uses: the shared ones and the readers of stored columns.
FOLDER_LABEL_CHECKS = SimpleNamespace(**vars(LABEL_CHECKS), stored_mask=_stored_mask, matrix=_matrix)


# ------------------------------------------------------------------------------------------------------
# Checking rows


def _check_row(row: dict, by_id) -> tuple[str, tuple]:
    """Raise RowProblem for the first problem in one row; returns (image digest, labels) of a good row, to find
    the same image listed twice or in two splits."""
    task = row.get("task")
    spec = by_id.get(task)
    if spec is None:
        raise RowProblem("task", f"unknown task {task!r}; valid task ids: {', '.join(by_id)}")

    def value(name):
        if name not in row:
            raise RowProblem(name, f"column '{name}' is missing and task '{task}' ({spec.type}) needs it")
        if row[name] is None:
            raise RowProblem(name, f"empty, but task '{task}' ({spec.type}) needs it")
        return row[name]

    # Fields of other task types must be empty: a filled one means rows or columns were mixed up.
    kind = training_task_type(spec)
    for name in LABEL_FIELDS:
        if name not in kind.example_features and row.get(name) is not None:
            raise RowProblem(name, f"must be empty for a {spec.type} task ('{task}')")
    return kind.check_folder_labels(value, spec, lambda: _image_info(value("image"), "image"), FOLDER_LABEL_CHECKS)


def _check_split(raw: datasets.Dataset, indices: list[int], by_id, num_workers) -> tuple[list, dict]:
    """(row index, problem) for every bad row among `indices`, in index order, and {row index: (image
    digest, labels)} of the good ones."""
    columns = raw.column_names

    def check_chunk(chunk):
        batch = raw[chunk[0] : chunk[-1] + 1] if chunk == list(range(chunk[0], chunk[-1] + 1)) else raw.select(chunk)[:]
        found, good = [], {}
        for offset, index in enumerate(chunk):
            row = {name: batch[name][offset] for name in columns}
            try:
                good[index] = _check_row(row, by_id)
            except RowProblem as problem:
                found.append((index, problem))
            except Exception as error:  # a malformed value: this row's problem, not the whole load's
                found.append((index, RowProblem("row", f"{type(error).__name__}: {error}")))
        return found, good

    chunks = [indices[i : i + _CHUNK] for i in range(0, len(indices), _CHUNK)]
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(chunks) < 2:
        results = [check_chunk(chunk) for chunk in chunks]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(check_chunk, chunks))
    good = {}
    for _, part in results:
        good.update(part)
    return [item for found, _ in results for item in found], good


def _undecoded(dataset: datasets.Dataset) -> datasets.Dataset:
    """The dataset with Image columns left as bytes/paths, so checking reads headers, not pixels."""
    for name in ("image", "mask"):
        if name in dataset.features and isinstance(dataset.features[name], datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset


def _repeated_images(good: dict, split_order: list[str]) -> tuple[list, list]:
    """The same image (identical pixels) listed more than once for a task, as in `load_fmc_uia`: in two splits,
    or twice with other labels, every listing is a problem; twice with the same labels, the later ones are
    duplicates. `good`: {(split, row): (task, digest, labels)}. Returns (problems as (split, row, RowProblem,
    task), duplicates as (split, row, first row, task))."""
    groups = defaultdict(list)
    for (split, index), (task, digest, labels) in sorted(good.items(), key=lambda item: (split_order.index(item[0][0]), item[0][1])):
        groups[(task, digest)].append((split, index, labels))
    problems, duplicates = [], []
    for (task, _), members in groups.items():
        if len(members) < 2:
            continue
        first = members[0]
        other_split = next((member for member in members if member[0] != first[0]), None)
        if other_split is not None:
            for split, index, _ in members:
                other = other_split if split == first[0] else first
                problem = RowProblem("image", f"the same image (identical pixels) is in split '{split}' here and in split "
                                            f"'{other[0]}' at row {other[1]}; an image in two splits leaks into "
                                            f"validation: keep it in one")
                problems.append((split, index, problem, task))
            continue
        clash = next((member for member in members[1:] if member[2] != first[2]), None)
        if clash is not None:
            for split, index, labels in members:
                other = clash if labels == first[2] else first
                problem = RowProblem(labels[0], f"the same image (identical pixels) is listed for task '{task}' at row "
                                              f"{other[1]} with other labels; keep one row")
                problems.append((split, index, problem, task))
            continue
        duplicates += [(split, index, first[1], task) for split, index, _ in members[1:]]
    return problems, duplicates


# ------------------------------------------------------------------------------------------------------
# Decoding into the example schema


class StoredExampleDecoder:
    """The datasets transform for folder data: stored values -> the example schema (a one-column batch,
    i.e. a column access, is returned as stored)."""

    def __call__(self, batch: dict) -> dict:
        if len(batch) == 1:
            return batch
        out = {}
        if "image" in batch:
            bits_column = batch.get("bits_stored") or [None] * len(batch["image"])
            decoded = [self._image(image, bits) for image, bits in zip(batch["image"], bits_column)]
            out["image"] = [image for image, _ in decoded]
        for key in ("task", "label"):
            if key in batch:
                out[key] = batch[key]
        if "mask" in batch:
            out["mask"] = [None if m is None else _stored_mask(m) for m in batch["mask"]]
        out.update(decode_label_arrays(batch))
        if "image" in batch:
            out["bits_stored"] = [bits for _, bits in decoded]
        elif "bits_stored" in batch:
            out["bits_stored"] = batch["bits_stored"]
        for key in ("source",):
            if key in batch:
                out[key] = batch[key]
        return out

    @staticmethod
    def _image(value, bits):
        if isinstance(value, str):
            return decode_image(value)
        if isinstance(value, Image.Image):
            if value.mode in WIDE_MODES:  # a 16-bit PNG: an array, like a 16-bit file from the challenge layout
                return to_uint16(np.asarray(value), "image"), bits or 16
            return value, None
        array = np.asarray(value)
        if array.dtype != np.uint8:
            array = to_uint16(array, "image")  # array features may hold wider integer types
        return array, bits or (8 if array.dtype == np.uint8 else 16)


# ------------------------------------------------------------------------------------------------------
# Public entry points


def _pick_split(available: list[str], split: str) -> str:
    if split in available:
        return split
    for alias in _SPLIT_ALIASES.get(split, ()):
        if alias in available:
            return alias
    raise ValueError(f"unknown split {split!r}; this dataset has: {', '.join(available)}")


def load_hf_folder(path, split: str | None = None, tasks=None, registry=None, on_error: str = "raise", num_workers=None):
    """Load a `datasets` folder written with ``save_to_disk`` in the example schema, checking every row.

    `split`, `tasks`, `registry`, `on_error` and `num_workers` behave as in `load_fmc_uia`: None gives a
    DatasetDict (a folder holding one Dataset becomes a dict with that dataset under its split name, or
    "train"), a name gives that Dataset. Errors are `HFFolderDataError` naming the folder, split, row
    index and field. The loading report is JSON in ``dataset.info.description`` (any description the
    folder had is kept under "original_description").
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    by_id = registry_by_id(registry)
    wanted = check_task_names(tasks, by_id)
    path = os.fspath(path)
    loaded = datasets.load_from_disk(path)
    if isinstance(loaded, datasets.DatasetDict):
        parts = dict(loaded)
    else:
        parts = {str(loaded.split) if loaded.split is not None else "train": loaded}
    if split is not None:
        if isinstance(loaded, datasets.DatasetDict):
            name = _pick_split(list(parts), split)
            parts = {name: parts[name]}
        else:  # the folder is one split: take it under the name asked for
            parts = {split: next(iter(parts.values()))}

    selected, bad, good_rows = {}, [], {}
    # Rows are checked in threads, every image decoded in full; wall_seconds is what that costs.
    check = {"rows": 0, "wall_seconds": 0.0, "workers": num_workers if num_workers is not None else (os.cpu_count() or 1)}
    for name, dataset in parts.items():
        for column in ("image", "task"):
            if column not in dataset.column_names:
                raise HFFolderDataError(path, name, 0, column, f"column '{column}' is missing; columns: {dataset.column_names}")
        task_column = stored_column(dataset, "task")
        indices = [i for i, task in enumerate(task_column) if wanted is None or task in wanted]
        started = time.perf_counter()
        problems, good = _check_split(_undecoded(dataset.with_format(None)), indices, by_id, num_workers)
        check["rows"] += len(indices)
        check["wall_seconds"] += time.perf_counter() - started
        bad += [(name, index, problem, task_column[index]) for index, problem in problems]
        selected[name] = indices
        good_rows.update({(name, index): (task_column[index],) + found for index, found in good.items()})
    repeated, duplicates = _repeated_images(good_rows, list(parts))
    order = {name: position for position, name in enumerate(parts)}
    bad = sorted(bad + repeated, key=lambda item: (order[item[0]], item[1]))
    for name in parts:
        failed = {index for n, index, _, _ in bad if n == name} | {index for n, index, _, _ in duplicates if n == name}
        selected[name] = [i for i in selected[name] if i not in failed]

    def error(item, more=0):
        name, index, problem, _ = item
        return HFFolderDataError(path, name, index, problem.field, problem.problem, more)

    if bad and on_error == "raise":
        raise error(bad[0], more=len(bad) - 1)

    report_base = {
        "loader": "hf_folder",
        "path": os.path.abspath(path),
        "tasks": sorted(wanted) if wanted is not None else None,
        "skipped": {name: dict(sorted(Counter(task for n, _, _, task in bad if n == name).items())) for name in parts},
        "num_skipped": len(bad),
        "problems": [str(error(item)) for item in bad[:MAX_REPORTED_PROBLEMS]],
        "check": dict(check, wall_seconds=round(check["wall_seconds"], 3)),
        "duplicates_dropped": {
            name: dict(sorted(Counter(task for n, _, _, task in duplicates if n == name).items())) for name in parts
        },
        "duplicate_rows": [f"split '{n}' row {index} repeats row {first} (task '{task}', same image and labels)"
                           for n, index, first, task in duplicates[:MAX_REPORTED_PROBLEMS]],
    }
    if duplicates:
        logger.warning("datasets folder %s: dropped %d duplicate row(s); first: %s", path, len(duplicates),
                       report_base["duplicate_rows"][0])
    if bad:
        logger.warning("datasets folder %s: skipped %d row(s) with problems; first: %s", path, len(bad), report_base["problems"][0])
    rows = {}
    built = {}
    for name, dataset in parts.items():
        keep = selected[name]
        if len(keep) != len(dataset):
            dataset = dataset.select(keep)
        rows[name] = dict(sorted(Counter(stored_column(dataset, "task")).items()))
        built[name] = dataset
    report_base["rows"] = rows
    for name, dataset in list(built.items()):
        original = dataset.info.description
        dataset = dataset.with_transform(StoredExampleDecoder())
        report = dict(report_base, split_name=name, original_description=original or None)
        dataset.info.description = json.dumps(report, sort_keys=True)
        built[name] = dataset
    return built[next(iter(built))] if split is not None else datasets.DatasetDict(built)


def load_data(path_or_name, split: str | None = None, tasks=None, registry=None, on_error: str = "raise", **kwargs):
    """Load a challenge layout or a `datasets` folder, whichever `path_or_name` is.

    A folder with ``csv_files/`` or ``train/csv_files/`` goes to `load_fmc_uia` (extra keyword arguments
    such as `val_fraction`, `seed`, `dicom_frame` go with it); a folder with ``dataset_dict.json`` or
    ``dataset_info.json``/``state.json`` goes to `load_hf_folder`. Returns what that reader returns (a
    `datasets.Dataset` for a `split`, else a `datasets.DatasetDict`) and raises what it raises (`DataError`
    for a problem in the data). Anything else, a hub dataset name included (nothing is fetched), is a
    ValueError that says what was expected.
    """
    path = os.fspath(path_or_name)
    common = dict(split=split, tasks=tasks, registry=registry, on_error=on_error)
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "csv_files")) or os.path.isdir(os.path.join(path, "train", "csv_files")):
            return load_fmc_uia(path, **common, **kwargs)
        if any(os.path.isfile(os.path.join(path, name)) for name in ("dataset_dict.json", "dataset_info.json", "state.json")):
            return load_hf_folder(path, **common, **kwargs)
    where = "a folder" if os.path.isdir(path) else ("a file" if os.path.exists(path) else "not found")
    raise ValueError(
        f"cannot load {path!r} ({where}): expected a challenge layout (csv_files/*.csv or train/csv_files/ and "
        f"val/csv_files/) or a datasets folder written by save_to_disk (dataset_dict.json, or dataset_info.json "
        f"and state.json); hub dataset names are not downloaded"
    )
