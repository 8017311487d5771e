"""Writers for small on-disk fixtures shared by the test files: DICOM files built with pydicom, the FMC_UIA
challenge layout (a full one, and `small_layout`: one row per task type), and a loaded dataset saved back as
a `datasets` folder. (pytest fixtures shared by several files are in `conftest.py`.)

The tests write their data in exactly the formats labs have on disk, so the loaders are exercised on files,
not on mocks.
"""

from __future__ import annotations

import csv
import json
import os

import datasets
import numpy as np
from PIL import Image

# The example schema of a `datasets` folder as a lab would save it (images and masks as Image columns).
EXAMPLE_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "task": datasets.Value("string"),
        "label": datasets.Value("int64"),
        "mask": datasets.Image(),
        "boxes": datasets.List(datasets.List(datasets.Value("float32"))),
        "class_labels": datasets.List(datasets.Value("int64")),
        "points": datasets.List(datasets.List(datasets.Value("float32"))),
    }
)

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


def write_dicom(path, pixels, photometric, bits_stored=None, palette=None, ybr422=False):
    """Write an uncompressed (explicit VR little endian) ultrasound DICOM file.

    `pixels`: (H, W) or (H, W, 3) for one frame, (F, H, W[, 3]) with F > 1 for a multi-frame file; stored
    as given (pass YBR samples for YBR photometrics, LUT indices for PALETTE COLOR). `palette`: (N, 3)
    uint16 LUT entries for PALETTE COLOR. `ybr422`: pack the chroma of pixel pairs (the native
    YBR_FULL_422 layout Y1 Y2 Cb Cr; the chroma of the left pixel of each pair is written).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    color = photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")
    multi = pixels.ndim == (4 if color else 3)
    frames = pixels if multi else pixels[None]
    bits_allocated = 8 if pixels.dtype == np.uint8 else 16

    meta = FileMetaDataset()
    sop_class = US_MULTIFRAME_STORAGE if multi else US_IMAGE_STORAGE
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if color:
        ds.PlanarConfiguration = 0
    if multi:
        ds.NumberOfFrames = frames.shape[0]
    if palette is not None:
        palette = np.asarray(palette, dtype=np.uint16)
        descriptor = [len(palette), 0, 16]
        ds.RedPaletteColorLookupTableDescriptor = descriptor
        ds.GreenPaletteColorLookupTableDescriptor = descriptor
        ds.BluePaletteColorLookupTableDescriptor = descriptor
        ds.RedPaletteColorLookupTableData = palette[:, 0].astype("<u2").tobytes()
        ds.GreenPaletteColorLookupTableData = palette[:, 1].astype("<u2").tobytes()
        ds.BluePaletteColorLookupTableData = palette[:, 2].astype("<u2").tobytes()
    if ybr422:
        y, cb, cr = frames[..., 0], frames[..., 1], frames[..., 2]
        packed = np.stack([y[:, :, 0::2], y[:, :, 1::2], cb[:, :, 0::2], cr[:, :, 0::2]], axis=-1)
        data = packed.astype(np.uint8).tobytes()
    else:
        data = frames.astype("<u2" if bits_allocated == 16 else np.uint8).tobytes()
    if len(data) % 2:
        data += b"\0"  # DICOM values have even length
    ds.PixelData = data
    ds["PixelData"].VR = "OW" if bits_allocated == 16 else "OB"
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


# ------------------------------------------------------------------------------------------------------
# The challenge layout

CSV_COLUMNS = [
    "image_path", "mask_path", "task_id", "task_name", "mask", "num_classes",
    "point_1_xy", "point_2_xy", "point_3_xy", "x_min", "y_min", "x_max", "y_max",
]  # fmt: skip


def _rng_image(rng, height, width, rgb):
    shape = (height, width, 3) if rgb else (height, width)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _save_png(root, relative, array):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _blob_mask(rng, height, width, num_classes):
    """A mask with every class present: horizontal bands of class indices plus noise-free edges."""
    mask = np.zeros((height, width), dtype=np.uint8)
    bands = np.array_split(np.arange(height), num_classes)
    for cls, rows in enumerate(bands):
        start = int(rng.integers(0, width // 3))
        mask[rows, start:] = cls
    return mask


def write_challenge_layout(root, seed=0, with_dicom=True):
    """Write a small FMC_UIA-style dataset under `root` and return the expected examples.

    All four task types, two CSV files with rows in shuffled order, grayscale and RGB images of varying
    sizes, multi-class masks, 3-point regression and (optionally) one DICOM row. Returns a dict
    source ("csv_files/<file>:<line>") -> expected fields (task, label, mask, boxes, class_labels, points,
    image as an array, size).
    """
    rng = np.random.default_rng(seed)
    rows, expected = [], []

    def add(row, image_rel, image, fields):
        rows.append(row)
        expected.append(dict(fields, image=image, image_path=image_rel))

    sizes = [(40, 56), (48, 48), (36, 64), (52, 44)]
    # segmentation: cardiac_multi (4 classes, grayscale) and cervix (2 classes, RGB)
    for task, num_classes, folder, rgb in (("cardiac_multi", 4, "Four", False), ("cervix", 2, "Two", True)):
        for i in range(5):
            h, w = sizes[i % len(sizes)]
            image = _rng_image(rng, h, w, rgb)
            mask = _blob_mask(rng, h, w, num_classes)
            image_rel = f"Segmentation/{folder}/{task}/img_{i}.png"
            mask_rel = f"Segmentation/{folder}/{task}/mask_{i}.png"
            _save_png(root, image_rel, image)
            if rgb:  # masks saved as palette PNGs (index = class, colours for viewing), as many tools do
                palette_mask = Image.frombytes("P", (w, h), mask.tobytes())
                palette_mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
                palette_mask.save(os.path.join(root, mask_rel))
            else:
                _save_png(root, mask_rel, mask)
            add(
                {"image_path": f"../{image_rel}", "mask_path": f"../{mask_rel}", "task_id": task,
                 "task_name": "segmentation"},
                image_rel, image, {"task": task, "mask": mask},
            )  # fmt: skip
    # classification: breast_3cls, 3 classes x 3 images each (stratification has something to do)
    for i in range(9):
        h, w = sizes[i % len(sizes)]
        image = _rng_image(rng, h, w, rgb=i % 2 == 0)
        image_rel = f"Classification/breast_3cls/{i}.png"
        _save_png(root, image_rel, image)
        label = i % 3
        add(
            {"image_path": f"../{image_rel}", "task_id": "breast_3cls", "task_name": "classification",
             "mask": str(label)},
            image_rel, image, {"task": "breast_3cls", "label": label},
        )  # fmt: skip
    # detection: thyroid_nodule_det, one box per image
    for i in range(5):
        h, w = sizes[i % len(sizes)]
        image = _rng_image(rng, h, w, rgb=False)
        image_rel = f"Detection/thyroid/{i}.jpg" if i == 0 else f"Detection/thyroid/{i}.png"
        path = os.path.join(root, image_rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(image).save(path)
        if image_rel.endswith(".jpg"):
            image = np.asarray(Image.open(path))  # JPEG is lossy: expect what is on disk
        box = [float(2 + i), 3.5, float(w - 5), float(h - 2 - i)]
        add(
            {"image_path": f"../{image_rel}", "task_id": "thyroid_nodule_det", "task_name": "detection",
             "x_min": box[0], "y_min": box[1], "x_max": box[2], "y_max": box[3]},
            image_rel, image, {"task": "thyroid_nodule_det", "boxes": [box], "class_labels": [0]},
        )  # fmt: skip
    # regression: IUGC, 3 points (capital-R task name, as the challenge spells it)
    for i in range(5):
        h, w = sizes[i % len(sizes)]
        image = _rng_image(rng, h, w, rgb=True)
        image_rel = f"Regression/IUGC/{i}.png"
        _save_png(root, image_rel, image)
        points = [[float(rng.integers(0, w)) + 0.25, float(rng.integers(0, h)) + 0.5] for _ in range(3)]
        row = {"image_path": f"../{image_rel}", "task_id": "IUGC", "task_name": "Regression", "num_classes": 3}
        for k, point in enumerate(points, start=1):
            row[f"point_{k}_xy"] = json.dumps(point)
        add(row, image_rel, image, {"task": "IUGC", "points": points})
    if with_dicom:
        # A 3-frame 12-bit cine as a classification row; the loader takes the middle frame by default.
        cine = rng.integers(0, 4096, size=(3, 30, 40), dtype=np.uint16)
        image_rel = "Classification/breast_3cls/cine.dcm"
        os.makedirs(os.path.join(root, os.path.dirname(image_rel)), exist_ok=True)
        write_dicom(os.path.join(root, image_rel), cine, "MONOCHROME2", bits_stored=12)
        add(
            {"image_path": f"../{image_rel}", "task_id": "breast_3cls", "task_name": "classification",
             "mask": "2"},
            image_rel, cine[1], {"task": "breast_3cls", "label": 2, "bits_stored": 12},
        )  # fmt: skip

    order = rng.permutation(len(rows))
    files = {"part_a.csv": [], "part_b.csv": []}
    for n, index in enumerate(order):
        files["part_a.csv" if n % 2 == 0 else "part_b.csv"].append(index)
    result = {}
    os.makedirs(os.path.join(root, "csv_files"), exist_ok=True)
    for name, indices in files.items():
        write_csv(os.path.join(root, "csv_files", name), [rows[i] for i in indices])
        for line, index in enumerate(indices, start=2):
            result[f"csv_files/{name}:{line}"] = expected[index]
    return result


def write_csv(path, rows, columns=CSV_COLUMNS):
    """Write rows (dicts) with the challenge's columns; missing values are empty cells."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in columns})


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def snapshot(root):
    """Every file under `root` with its size and mtime, to prove a loader wrote nothing there."""
    state = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            info = os.stat(path)
            state[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns)
    return state


def small_layout(root):
    """One good row per task type (plus a 4-class mask row) in csv_files/index.csv; returns the rows."""
    for folder in ("Segmentation/Four", "Classification", "Detection", "Regression", "csv_files"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    image = np.zeros((20, 30), dtype=np.uint8)
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[5:10, 5:10], mask[10:15, 10:20] = 2, 3
    Image.fromarray(image).save(os.path.join(root, "Segmentation/Four/img.png"))
    Image.fromarray(mask).save(os.path.join(root, "Segmentation/Four/mask.png"))
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(os.path.join(root, "Classification/a.png"))
    Image.fromarray(image).save(os.path.join(root, "Detection/a.png"))
    Image.fromarray(image).save(os.path.join(root, "Regression/a.png"))
    return [
        {"image_path": "../Segmentation/Four/img.png", "mask_path": "../Segmentation/Four/mask.png",
         "task_id": "cardiac_multi", "task_name": "segmentation"},
        {"image_path": "../Classification/a.png", "task_id": "breast_3cls", "task_name": "classification", "mask": "2"},
        {"image_path": "../Detection/a.png", "task_id": "thyroid_nodule_det", "task_name": "detection",
         "x_min": "1", "y_min": "2", "x_max": "29", "y_max": "19.5"},
        {"image_path": "../Regression/a.png", "task_id": "IUGC", "task_name": "Regression", "num_classes": "3",
         "point_1_xy": "[1, 2]", "point_2_xy": "[3.5, 4]", "point_3_xy": "[29, 19]"},
    ]  # fmt: skip


def to_hf_dataset(dataset):
    """The loaded examples as a plain datasets.Dataset in the example schema (what a lab might save)."""
    records = {name: [] for name in ("image", "task", "label", "mask", "boxes", "class_labels", "points", "bits_stored", "source")}
    for example in dataset:
        for name in records:
            value = example[name]
            if name == "mask" and value is not None:
                value = Image.fromarray(value)
            elif isinstance(value, np.ndarray) and name != "image":
                value = value.tolist()
            records[name].append(value)
    features = datasets.Features(
        {**EXAMPLE_FEATURES, "bits_stored": datasets.Value("int32"), "source": datasets.Value("string")}
    )
    return datasets.Dataset.from_dict(records, features=features)
