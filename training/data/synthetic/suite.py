"""The synthetic suite: which tasks it holds, how many examples each split has, and every example as a pure
function of (seed, task, split, index); `SyntheticDataset` serves a split to training.

Coordinates: points and boxes are in pixels with the image spanning [0, W] x [0, H] (pixel j covers
[j, j+1), its centre is j + 0.5); a box is the tight box of the object's pixels, so x_max > x_min.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from pathlib import Path

import numpy as np

from modeling_m2dino.tasks import EXTRA_TASKS, FMC_UIA_TASKS, TaskSpec

from ...task_types import TRAINING_TASK_TYPES, training_task_type
from .renderer import GROUP_STYLES, Canvas, field_of_view_raster, render
from .scenes import TASK_SCENES, TaskScene

SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_TASK_POS = {t.id: k for k, t in enumerate(FMC_UIA_TASKS + EXTRA_TASKS)}
_TASK_KEY = {t.id: zlib.crc32(t.id.encode()) for t in FMC_UIA_TASKS + EXTRA_TASKS}  # stable when the registry is reordered

# Train examples per task at scale=1.0, mirroring the real imbalance at roughly a tenth of its size:
# obstetrics large, breast / lung / detection / regression small. Val and test: VAL_FRACTION of train.
TRAIN_SIZES = {
    "FUGC": 100, "IUGC": 150, "fetal_femur": 80,
    "fetal_head_pos_cls": 400, "fetal_plane_cls": 600, "fetal_sacral_pos_cls": 300,
    "cervix": 200, "cervix_multi": 150, "fetal_abdomen_multi": 300, "fetal_head": 500,
    "fetal_heart": 250, "head_symphysis_multi": 400,
    "breast_2cls": 120, "breast_3cls": 160, "breast_lesion": 120,
    "lung_2cls": 80, "lung_disease_3cls": 100, "lung": 60,
    "thyroid_nodule_det": 120, "thyroid_nodule": 200,
    "cardiac_multi": 300, "carotid_artery": 150,
    "liver_lesion_2cls": 100, "organ_cls": 250,
    "ovary_tumor": 120, "uterine_fibroid_det": 100, "spinal_cord_injury_loc": 60,
}
VAL_FRACTION = 0.25
MIN_EXAMPLES = 4  # per split; classification tasks keep at least two examples of every class on top

# Relative class frequencies (classification), so majority-class baselines are not trivially 1/K.
CLASS_WEIGHTS = {
    "fetal_head_pos_cls": (5, 2, 2, 1, 3, 1, 2, 2),
    "fetal_sacral_pos_cls": (3, 2, 2, 1, 2, 1, 2, 2),
    "fetal_plane_cls": (3, 3, 2, 2, 1, 3),
    "breast_2cls": (2, 1), "breast_3cls": (1, 3, 2),
    "lung_2cls": (2, 3), "lung_disease_3cls": (2, 2, 3),
    "liver_lesion_2cls": (3, 2), "organ_cls": (3, 2, 1, 1, 1, 1),
}

# Task pairs whose transfer is measured (docs/synthetic.md, "Transfer by design"); `python -m
# m2dino_training.transfer_check` trains them alone and together.
TRANSFER_PAIRS = {
    "consistent": ("breast_2cls", "breast_3cls"),  # one breast scene; malignant = bright, irregular in both
    "conflicting": ("breast_3cls", "cardiac_multi"),  # nothing shared, and a dense task that keeps the encoder busy
    "opposite_meaning": ("breast_2cls", "liver_lesion_2cls"),  # bright, irregular = malignant in breast, benign in liver
}


def _task_spec(task) -> TaskSpec:
    """The registry spec for a task id (or a TaskSpec with a registry id)."""
    tid = task.id if isinstance(task, TaskSpec) else task
    if tid not in _TASK_POS:
        raise ValueError(f"unknown synthetic task {tid!r}; valid: {', '.join(_TASK_POS)}")
    return (FMC_UIA_TASKS + EXTRA_TASKS)[_TASK_POS[tid]]


def _task_scene(spec) -> TaskScene:
    """How a task is drawn: its `TASK_SCENES` entry, or for an extra task (`EXTRA_TASKS`) its type's `synthetic_scene`."""
    entry = TASK_SCENES.get(spec.id)
    return entry if entry is not None else TaskScene(*training_task_type(spec).synthetic_scene(spec))


def _train_size(spec) -> int:
    return TRAIN_SIZES[spec.id] if spec.id in TRAIN_SIZES else training_task_type(spec).synthetic_train_size


# The label keys of an example: every task type's (None where the task's type has no such label).
EXAMPLE_LABEL_FIELDS = tuple(name for kind in TRAINING_TASK_TYPES.values() for name in kind.example_features)


class SyntheticUltrasoundSuite:
    """The 27 FMC_UIA tasks as a deterministic synthetic suite.

    Every example is a pure function of (seed, task, split, index): `example()` regenerates any one alone,
    in any order and in any process. `scale` multiplies the per-task sizes (TRAIN_SIZES); every split
    keeps at least MIN_EXAMPLES examples and, for classification, two examples of every class.
    `image_size` is the square images' side in pixels (a multiple of 16, at least 32). `tasks` chooses task
    ids (default: the 27 challenge tasks; ids of `EXTRA_TASKS` may be added), kept in registry order. A bad
    `scale`, `image_size` or `seed`, or an unknown task id, is a ValueError.
    """

    def __init__(self, scale: float = 1.0, image_size: int = 224, seed: int = 0, tasks=None):
        if not isinstance(image_size, (int, np.integer)) or image_size % 16 or image_size < 32:
            raise ValueError(f"image_size must be a multiple of 16 (the ViT patch size) and at least 32, got {image_size!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.scale, self.image_size, self.seed = float(scale), int(image_size), int(seed)
        chosen = {_task_spec(t).id for t in (tasks if tasks is not None else FMC_UIA_TASKS)}
        self.tasks: list[TaskSpec] = [t for t in FMC_UIA_TASKS + EXTRA_TASKS if t.id in chosen]  # registry order

    def __repr__(self):
        return f"SyntheticUltrasoundSuite(scale={self.scale}, image_size={self.image_size}, seed={self.seed}, tasks={len(self.tasks)})"

    @property
    def task_ids(self) -> list[str]:
        return [t.id for t in self.tasks]

    def split_sizes(self, task) -> dict[str, int]:
        """{'train': n, 'val': m, 'test': m} for one task at this scale."""
        spec = _task_spec(task)
        floor = max(MIN_EXAMPLES, 2 * spec.num_classes) if training_task_type(spec).class_per_image else MIN_EXAMPLES
        train = max(floor, int(round(_train_size(spec) * self.scale)))
        val = max(floor, int(round(VAL_FRACTION * train)))
        return {"train": train, "val": val, "test": val}

    def size(self, task, split: str) -> int:
        return self.split_sizes(task)[check_split(split)]

    def class_of(self, task, split: str, index: int) -> int:
        """Class of a classification example: the first 2K indices cycle through the K classes (so every
        split holds two of each), later ones follow CLASS_WEIGHTS along a golden-ratio sequence."""
        spec = _task_spec(task)
        k = spec.num_classes
        if index < 2 * k:
            return index % k
        w = np.asarray(CLASS_WEIGHTS.get(spec.id, (1,) * k), np.float64)
        t = (index * 0.6180339887498949 + 0.37 * _SPLIT_CODE[split]) % 1.0
        return min(k - 1, int(np.searchsorted(np.cumsum(w) / w.sum(), t, side="right")))

    def example(self, task, split: str, index: int) -> dict:
        """One example: {image, task, label, mask, boxes, class_labels, points} (see the module docstring)."""
        spec = _task_spec(task)
        entry, n = _task_scene(spec), self.image_size
        label, canvas, geometry, image = self._draw(spec, split, index, entry.parts)
        fov = field_of_view_raster(n, entry.probe, GROUP_STYLES[spec.group].atten_db)[0]
        out = {"image": image, "task": spec.id, **dict.fromkeys(EXAMPLE_LABEL_FIELDS)}
        if label is not None:
            out["label"] = label
        out.update(training_task_type(spec).synthetic_labels(spec, entry, canvas.mask, geometry, fov, n))
        return out

    def _draw(self, spec, split, index, parts):
        """(label, canvas, geometry, image) of one example, with `parts` (part name -> class) in its mask."""
        n_split = self.size(spec, split)
        if not 0 <= index < n_split:
            raise IndexError(f"{spec.id}/{split}: index {index} out of range [0, {n_split})")
        entry = _task_scene(spec)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _TASK_KEY[spec.id], _SPLIT_CODE[split], int(index)]))
        label = self.class_of(spec, split, index) if training_task_type(spec).class_per_image else None
        canvas = Canvas(self.image_size, rng, entry.probe, spec, parts)
        geometry = entry.draw(canvas, spec.labels[label] if label is not None else None) or {}
        return label, canvas, geometry, render(canvas, GROUP_STYLES[spec.group])

    def part_mask(self, task, split: str, index: int, part: str) -> np.ndarray:
        """Boolean (H, W) mask of one named part of an example's scene (e.g. the `lesion` of a classification
        example, which labels nothing), inside the field of view: for checks of the cues that decide labels.
        The example itself is unchanged: its image is `example(task, split, index)["image"]`."""
        spec = _task_spec(task)
        _, canvas, _, _ = self._draw(spec, split, index, {part: 1})
        fov = field_of_view_raster(self.image_size, _task_scene(spec).probe, GROUP_STYLES[spec.group].atten_db)[0]
        return (canvas.mask == 1) & fov

    def examples(self, split: str, tasks=None):
        """All examples of a split, task by task (registry order), index by index."""
        for spec in self._select(tasks):
            for i in range(self.size(spec, split)):
                yield self.example(spec, split, i)

    def dataset(self, split: str, tasks=None) -> "SyntheticDataset":
        """A map-style dataset over the chosen tasks (default: all of the suite's), interleaved."""
        return SyntheticDataset(self, check_split(split), self._select(tasks))

    def to_hf_dataset(self, split: str, tasks=None):
        """The split as a `datasets.Dataset` (images and masks as Image features; None where N/A)."""
        import datasets

        feats = datasets.Features({
            "image": datasets.Image(), "task": datasets.Value("string"),
            **{name: feature(datasets) for kind in TRAINING_TASK_TYPES.values() for name, feature in kind.example_features.items()},
        })

        def rows(suite, split, ids, code):
            for ex in suite.examples(split, ids):
                yield {k: (v.tolist() if isinstance(v, np.ndarray) and k not in ("image", "mask") else v) for k, v in ex.items()}

        # The generator's fingerprint (datasets' cache key) must change whenever the drawing code does: the
        # renderer, the scenes and this module, hashed with the rest of the package.
        sources = sorted(Path(__file__).parent.glob("*.py"))
        code = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
        return datasets.Dataset.from_generator(rows, features=feats, gen_kwargs={
            "suite": self, "split": check_split(split), "ids": [t.id for t in self._select(tasks)], "code": code})

    def benchmark(self, n: int = 200, split: str = "train") -> float:
        """Generation speed in images per second, over n examples drawn across all the suite's tasks."""
        ds = self.dataset(split)
        ds[0]  # warm the field-of-view caches
        start = time.perf_counter()
        for k in range(n):
            ds[(k * 7919) % len(ds)]
        return n / (time.perf_counter() - start)

    def write_challenge_layout(self, out_dir, splits=("train", "val"), overwrite=False, grid=True) -> Path:
        """Write the suite in the challenge's on-disk layout (see `layout_writer.write_challenge_layout`)."""
        from .layout_writer import write_challenge_layout  # the writer imports this module

        return write_challenge_layout(out_dir, splits, suite=self, overwrite=overwrite, grid=grid)

    def _select(self, tasks):
        if tasks is None:
            return list(self.tasks)
        ids = {_task_spec(t).id for t in ([tasks] if isinstance(tasks, (str, TaskSpec)) else tasks)}
        missing = ids - set(self.task_ids)
        if missing:
            raise ValueError(f"tasks {sorted(missing)} are not in this suite ({len(self.tasks)} tasks)")
        return [t for t in self.tasks if t.id in ids]


def check_split(split):
    """The split name, if the suite has such a split; a ValueError naming the valid ones otherwise."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return split


class SyntheticDataset:
    """Map-style dataset (len, getitem -> example dict), generated on the fly; usable by a DataLoader.

    Order: every task's examples are spread evenly over the dataset. Index k is the k-th (task, i) pair
    sorted by (i + 0.5) / n_task, ties in registry order, so any window of consecutive indices is a
    size-proportional mix of tasks and each task's examples appear in increasing i.

    Drawn examples are kept in memory up to `cache_bytes` (their arrays' sizes), since training draws each
    example once per epoch and drawing costs more than the model's step on small images; every access
    returns fresh copies of the arrays, so a caller that edits one in place changes nothing here. A
    DataLoader worker holds its own cache, which lives only as long as the worker.
    """

    def __init__(self, suite, split, tasks, cache_bytes: int = 256 * 2**20):
        self.suite, self.split, self.tasks = suite, split, list(tasks)
        self.cache_bytes, self._cache, self._cached_bytes = cache_bytes, {}, 0
        sizes = [suite.size(t, split) for t in self.tasks]
        pos = np.concatenate([(np.arange(n) + 0.5) / n for n in sizes])
        which = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
        local = np.concatenate([np.arange(n) for n in sizes])
        order = np.lexsort((which, pos))
        self.task_index, self.example_index = which[order], local[order]

    def __len__(self):
        return len(self.task_index)

    def locate(self, k: int) -> tuple[str, int]:
        """(task id, index within the task) of dataset index k."""
        if not -len(self) <= k < len(self):
            raise IndexError(f"index {k} out of range for a dataset of {len(self)}")
        return self.tasks[self.task_index[k]].id, int(self.example_index[k])

    def task_of(self, k: int) -> str:
        return self.locate(k)[0]

    def __getitem__(self, k):
        tid, i = self.locate(int(k))
        example = self._cache.get((tid, i))
        if example is None:
            example = self.suite.example(tid, self.split, i)
            size = sum(v.nbytes for v in example.values() if isinstance(v, np.ndarray))
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[(tid, i)] = example
                self._cached_bytes += size
        return {key: value.copy() if isinstance(value, np.ndarray) else value for key, value in example.items()}

