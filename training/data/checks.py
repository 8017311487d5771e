"""Checks and decoding shared by the data readers (`fmc_uia.py`, `hf_folder.py`).

A reader parses its rows its own way, then asks the same questions of every row here: is the task known,
does the mask fit its image and task, does a box or a point lie inside the image, is a class in range, does
the image decode in full. A row check raises `RowProblem` (the field and what is wrong); the reader turns it
into a `DataError` that also says where the row is (CSV file and line, or folder, split and row index).
"""

from __future__ import annotations

import hashlib
import math
import time
from types import SimpleNamespace

import datasets
import numpy as np
from PIL import Image, UnidentifiedImageError

from modeling_m2dino.detection import box_problem  # one rule for a box, whether a label read from disk or given to the processor
from modeling_m2dino.tasks import EXTRA_TASKS, FMC_UIA_TASKS, TaskSpec

from ..task_types import TRAINING_TASK_TYPES
from .dicom import DICOM_EXTENSIONS, is_dicom_file, read_dicom, read_dicom_header, select_frames

# PIL modes holding more than 8 bits per sample: returned as uint16 arrays, not PIL images.
WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
IMAGE_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"} | WIDE_MODES
# Rows with problems listed by name in a loading report; the rest are counted.
MAX_REPORTED_PROBLEMS = 50


class DataError(ValueError):
    """A problem in the data a reader was given; every reader raises it. `where` names the file or folder and
    the row, `field` the column or CSV field (None for a problem of a whole file), `problem` what is wrong;
    `more` counts the other rows with problems. `FMCUIADataError` and `HFFolderDataError` are its two kinds,
    with the location split into attributes of their own."""

    def __init__(self, where: str, field: str | None, problem: str, more: int = 0):
        self.where, self.field, self.problem, self.more = where, field, problem, more
        message = where
        if field is not None:
            message += f", field '{field}'"
        message += f": {problem}"
        if more:
            message += f" (and {more} more row(s) with problems; on_error='skip' drops and reports them)"
        super().__init__(message)


class RowProblem(Exception):
    """Raised inside row checks with the field and the problem; the reader turns it into a `DataError` that
    says where the row is."""

    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


# ------------------------------------------------------------------------------------------------------
# Tasks and labels

def registry_by_id(registry=None) -> dict[str, TaskSpec]:
    """Task id -> TaskSpec for a list of TaskSpec (default: the 27 FMC_UIA tasks and the extra tasks); duplicate ids
    fail."""
    specs = list(FMC_UIA_TASKS + EXTRA_TASKS if registry is None else registry)
    by_id: dict[str, TaskSpec] = {}
    for spec in specs:
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"registry entries must be TaskSpec, got {type(spec).__name__}")
        if spec.id in by_id:
            raise ValueError(f"registry lists task {spec.id!r} twice")
        by_id[spec.id] = spec
    return by_id


def check_task_names(tasks, by_id: dict[str, TaskSpec]) -> set[str] | None:
    """The requested task ids as a set (None = all); unknown names fail with the valid ones listed."""
    if tasks is None:
        return None
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [name for name in tasks if name not in by_id]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid task ids: {', '.join(by_id)}")
    return set(tasks)


def mask_problem(mask: np.ndarray, spec: TaskSpec, width: int, height: int) -> str | None:
    """Why a mask does not fit its image and task, or None."""
    if mask.shape != (height, width):
        return f"mask is {mask.shape[1]}x{mask.shape[0]} (width x height) but its image is {width}x{height}"
    top = int(mask.max()) if mask.size else 0
    if top >= spec.num_classes:
        return (
            f"mask value {top} >= num_classes {spec.num_classes} of task '{spec.id}' "
            f"(masks hold class indices 0..{spec.num_classes - 1})"
        )
    return None


def point_problem(points, width: int, height: int) -> tuple[int, str] | None:
    """(index of the first point outside the image, why), or None. Points are pixel coordinates, so a point
    outside the image is a swapped or mis-scaled annotation, not something a head can predict."""
    for index, (x, y) in enumerate(points):
        if not (math.isfinite(x) and math.isfinite(y)) or not (0 <= x <= width and 0 <= y <= height):
            return index, f"point [{x}, {y}] lies outside the {width}x{height} image (width x height)"
    return None


def class_problem(value: int, spec: TaskSpec) -> str | None:
    if not 0 <= value < spec.num_classes:
        return f"class {value} out of range for task '{spec.id}' ({spec.num_classes} classes: 0..{spec.num_classes - 1})"
    return None


def mask_to_array(image: Image.Image) -> np.ndarray:
    """A decoded mask image as (H, W) uint8 class indices; ValueError if it is not a class-index mask.

    Palette PNGs give their indices; RGB masks are accepted only when all three channels are equal
    (a grayscale mask saved as RGB); anything else is refused rather than guessed at.
    """
    mode = image.mode
    array = np.asarray(image)
    if mode in ("RGB", "RGBA"):
        if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise ValueError(f"mask is a colour ({mode}) image; masks must be single-channel class indices")
        array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"mask has mode {mode!r}; masks must be single-channel class indices")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"mask values {array.min()}..{array.max()} do not fit 8-bit class indices")
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array)


def read_mask(path: str) -> np.ndarray:
    """Read a mask file as (H, W) uint8 class indices."""
    with Image.open(path) as image:
        image.load()
        return mask_to_array(image)


# ------------------------------------------------------------------------------------------------------
# Images


def _is_dicom_name(path: str) -> bool:
    return path.lower().endswith(DICOM_EXTENSIONS)


def image_header(path: str, dicom_frame="middle") -> tuple[int, int, int | None]:
    """(width, height, bits_stored or None) of an image or DICOM file, reading only its header."""
    if not _is_dicom_name(path):
        try:
            with Image.open(path) as image:
                width, height = image.size
                mode = image.mode
        except FileNotFoundError:
            raise
        except (UnidentifiedImageError, OSError) as error:
            if not is_dicom_file(path):
                raise ValueError(f"cannot read image {path}: {error}") from error
        else:
            if mode not in IMAGE_MODES:
                raise ValueError(f"image {path} has unsupported mode {mode!r}")
            return width, height, (16 if mode in WIDE_MODES else None)
    header = read_dicom_header(path)
    select_frames(header.num_frames, dicom_frame)  # a bad frame choice fails here, not mid-training
    return header.columns, header.rows, header.bits_stored


def to_uint16(array: np.ndarray, what: str) -> np.ndarray:
    """A wide-integer image as uint16, refusing values that would wrap around rather than corrupt them."""
    if array.dtype == np.uint16:
        return array
    if array.dtype.kind not in "iu":
        raise ValueError(f"{what}: samples of dtype {array.dtype}; expected 8- or 16-bit integers")
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise ValueError(f"{what}: values {array.min()}..{array.max()} outside 0..65535")
    return array.astype(np.uint16)


def decode_image(path: str, dicom_frame="middle"):
    """(image, bits_stored): a PIL image for 8-bit files, a numpy array for 16-bit files and DICOM."""
    if not _is_dicom_name(path):
        try:
            image = Image.open(path)
            image.load()  # read now (and close the file) rather than leak a lazy handle into batches
        except UnidentifiedImageError:
            if not is_dicom_file(path):
                raise
        else:
            if image.mode in WIDE_MODES:
                return to_uint16(np.asarray(image), f"image {path}"), 16
            return image, None
    frame = read_dicom(path, frames=dicom_frame)[0]
    return frame.array, frame.bits_stored


def pixel_digest(image) -> str:
    """A digest of decoded pixels (PIL image or array) with their shape and sample type: equal for the same
    image saved under two names or re-encoded losslessly."""
    if isinstance(image, Image.Image):
        kind, data = f"{image.mode}{image.size}", image.tobytes()
    else:
        array = np.ascontiguousarray(image)
        kind, data = f"{array.dtype.str}{array.shape}", array.tobytes()
    return hashlib.blake2b(kind.encode() + b"\0" + data, digest_size=16).hexdigest()


def decode_in_full(path: str, dicom_frame="middle") -> tuple[str, float]:
    """Decode an image the way training will and return (pixel digest, seconds taken).

    A header can be intact while the pixel data is truncated or corrupt; only a full decode shows that.
    """
    start = time.perf_counter()
    image, _ = decode_image(path, dicom_frame)
    digest = pixel_digest(image)
    return digest, time.perf_counter() - start


def stored_label_features() -> dict:
    """The label columns a reader stores, over every task type (each type's `stored_columns`): name -> feature."""
    return {name: feature(datasets) for kind in TRAINING_TASK_TYPES.values() for name, feature in kind.stored_columns.items()}


# The checks a task type's label hooks use (`check_in_image`, `check_folder_labels`).
LABEL_CHECKS = SimpleNamespace(read_mask=read_mask, mask_problem=mask_problem, box_problem=box_problem,
                               point_problem=point_problem, class_problem=class_problem, pixel_digest=pixel_digest,
                               RowProblem=RowProblem)


def decode_label_arrays(batch: dict) -> dict:
    """Stored array-valued label columns of a batch (each type's `label_arrays`: boxes, class labels, points) ->
    numpy arrays of the example schema."""
    shapes = {name: form for kind in TRAINING_TASK_TYPES.values() for name, form in kind.label_arrays.items()}
    out = {}
    for key, (dtype, shape) in shapes.items():
        if key in batch:
            arrays = [None if v is None else np.asarray(v, dtype=dtype) for v in batch[key]]
            out[key] = [a if a is None or shape is None else a.reshape(shape) for a in arrays]
    return out


def stored_column(dataset: datasets.Dataset, name: str) -> list:
    """A column as stored (paths, not images), without running the decoding transform."""
    return dataset.with_format(None)[name][:] if len(dataset) else []
