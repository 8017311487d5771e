"""Training-time augmentation for every task type, deterministic per (seed, epoch, index).

One `Augmenter` serves all 27 tasks: it reads the example's `task` and transforms whichever targets
the example carries (`mask`, `boxes`, `points`), so the labels always follow the pixels.

Design, in the order the code runs:

* Randomness comes from `np.random.SeedSequence([seed, epoch, index])`, never from a global RNG.
  The Trainer restores RNG state only after data workers exist, so a resumed run must not depend on
  which worker process handled an example: with the same (seed, epoch, index) it gets the same
  augmentation.
* Geometry is ONE affine matrix (zoom-and-crop, rotation about the centre, horizontal flip) applied
  to the image (bilinear), the mask (nearest, filled with class 0 outside the source image), points
  (the matrix itself) and boxes (see below). A single matrix means a single resampling, and the
  targets are transformed by exactly the map the pixels went through.
* Coordinates are continuous pixel coordinates: pixel (row i, column j) covers
  [j, j+1) x [i, i+1), so its centre is (j + 0.5, i + 0.5) and a full-image box is (0, 0, W, H).
  This is the convention of the boxes and of PIL's affine transform (which we use for speed).
* Landmarks must stay inside the image and boxes must keep the whole object (by default; see
  `min_box_visibility`): the random transform is re-drawn, milder at each try (up to `max_tries`),
  until all points and boxes land inside, else the geometry falls back to the flip alone (a flip
  maps the image onto itself, so nothing can leave). Boxes are then
  still clipped to the image as a guard against labels that were outside to begin with; a box left
  with no area is dropped with its class label. FMC_UIA has one box per image, so constraining the
  transform (rather than clipping a box that was pushed out) keeps the box honest.
* A rotated box is not a box. `box_rotation="ellipse"` (default) takes the tight box of the ellipse
  inscribed in the original box, which fits the round objects of the detection tasks (nodules,
  fibroids, lesions) far better than the box around the four rotated corners (`"corners"`), which
  inflates the box by up to ~16 % per side at 10 degrees. Without rotation both give the same box.
* Flips are never applied to tasks whose `TaskSpec.allow_flip` is False (head and sacral position:
  a mirror image changes the left/right class) nor to tasks listed in `config.no_flip_tasks`.
  Landmark tasks are flipped: their points are anatomically named (internal os, symphysis superior,
  femur end ...), not "left point / right point", so mirroring moves each landmark together with its
  anatomy and the coordinates alone carry the flip; point i stays point i. Points defined by their
  image side (the femur's left and right ends) swap on a flip: the registry lists them as the task's
  `mirror_pairs`, and `config.flip_point_pairs` overrides that per task.
* Intensity (gain, contrast, multiplicative gamma speckle) touches the image only, after geometry,
  and keeps the dtype: uint8 stays uint8, uint16 stays uint16 (clipped to the dtype's range). RGB
  images get the same speckle on every channel, since speckle is a property of the tissue.

The output image has the input's type (PIL in, PIL out; array in, array out) and size. The input
example is never modified; keys the augmenter does not know are passed through.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from modeling_m2dino.tasks import EXTRA_TASKS, FMC_UIA_TASKS, TaskSpec

from ..task_types import training_task_type

__all__ = ["AugmentConfig", "AugmentParams", "Augmenter", "affine_matrix", "transform_points", "transform_boxes"]

# PIL modes that numpy round-trips and PIL's affine transform handles directly.
_PIL_NATIVE_UINT8 = {"L": 2, "RGB": 3, "RGBA": 4}


@dataclass
class AugmentConfig:
    """What the `Augmenter` may do. Every range includes the identity.

    scale: range of the crop's area as a fraction of the image; the crop is zoomed back to the
        image size (0.8 means a 1.118x zoom). Values above 1 zoom out (the border fills with 0).
    max_rotation: rotation drawn uniformly in [-max_rotation, max_rotation] degrees. Keep it well
        under 22.5 degrees: the position classes (OA, LOA, ...) are 45 degrees apart.
    flip_prob: probability of a horizontal flip, for tasks that allow flips.
    gain: multiplicative brightness range.
    contrast: range of the factor that stretches intensities about the image mean.
    speckle: largest standard deviation of the multiplicative speckle (gamma noise of mean 1); the
        strength of each example is drawn uniformly in [0, speckle]. 0 disables it.
    no_flip_tasks: task ids never flipped, on top of those with `TaskSpec.allow_flip = False`.
    flip_point_pairs: task id -> pairs (i, j) of landmark indices swapped on a flip, for datasets
        whose points are defined by image side. Empty by default (see the module docstring).
    box_rotation: "ellipse" or "corners", how a rotated box becomes an axis-aligned box.
    min_box_visibility: fraction of each transformed box that must stay inside the image. 1 (the
        default) keeps whole objects; lower it to let boxes that touch the border be augmented too,
        at the price of clipping (a box that touches the border can only stay whole under the flip).
    max_tries: random transforms drawn, each milder than the last, before falling back to the flip
        alone, when points or boxes would leave the image.
    enabled: False makes the augmenter return a copy of the example unchanged.
    """

    scale: tuple[float, float] = (0.8, 1.0)
    max_rotation: float = 10.0
    flip_prob: float = 0.5
    gain: tuple[float, float] = (0.8, 1.2)
    contrast: tuple[float, float] = (0.8, 1.2)
    speckle: float = 0.1
    no_flip_tasks: tuple[str, ...] = ()
    flip_point_pairs: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    box_rotation: str = "ellipse"
    min_box_visibility: float = 1.0
    max_tries: int = 10
    enabled: bool = True

    def __post_init__(self):
        self.scale = _range("scale", self.scale, low=1e-3)
        self.gain = _range("gain", self.gain, low=0.0)
        self.contrast = _range("contrast", self.contrast, low=0.0)
        if not 0 <= self.max_rotation <= 180:
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {self.max_rotation!r}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob!r}")
        if not 0 <= self.speckle < 1:
            raise ValueError(f"speckle must be in [0, 1), got {self.speckle!r}")
        if self.box_rotation not in ("ellipse", "corners"):
            raise ValueError(f"box_rotation must be 'ellipse' or 'corners', got {self.box_rotation!r}")
        if not 0 <= self.min_box_visibility <= 1:
            raise ValueError(f"min_box_visibility must be in [0, 1], got {self.min_box_visibility!r}")
        if int(self.max_tries) < 1:
            raise ValueError(f"max_tries must be >= 1, got {self.max_tries!r}")
        if isinstance(self.no_flip_tasks, str):
            raise ValueError("no_flip_tasks must be a collection of task ids, not one string")
        # A sorted tuple keeps the config JSON-able and its repr stable.
        self.no_flip_tasks = tuple(sorted(set(self.no_flip_tasks)))
        self.flip_point_pairs = {task: [tuple(int(i) for i in pair) for pair in pairs] for task, pairs in self.flip_point_pairs.items()}
        for task, pairs in self.flip_point_pairs.items():
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError(f"flip_point_pairs[{task!r}] must hold (i, j) pairs, got {pairs!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _range(name, value, low):
    lo, hi = (float(v) for v in value)
    if not low <= lo <= hi:
        raise ValueError(f"{name} must be a range (lo, hi) with {low} <= lo <= hi, got {value!r}")
    return (lo, hi)


@dataclass
class AugmentParams:
    """The random draw for one example; `Augmenter.apply` turns it into pixels and targets.

    `matrix` is 3x3 and maps input (x, y, 1) to output coordinates (continuous pixels). `fallback`
    says the drawn geometry would have pushed a point or box out and only the flip was kept.
    """

    matrix: np.ndarray
    flipped: bool
    zoom: float
    angle: float
    gain: float
    contrast: float
    speckle: float
    noise_seed: int = 0
    fallback: bool = False


def affine_matrix(width, height, zoom=1.0, angle=0.0, shift=(0.0, 0.0), flip=False) -> np.ndarray:
    """Input -> output 3x3 matrix: crop centred at the image centre + `shift`, zoom by `zoom`,
    rotate by `angle` degrees about the centre, then mirror horizontally if `flip`."""
    cx, cy = width / 2.0, height / 2.0
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    linear = zoom * np.array([[cos, -sin], [sin, cos]])
    if flip:
        linear[0] *= -1.0  # mirror the output x about the centre
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    # The crop centre (cx + sx, cy + sy) lands on the output centre (cx, cy).
    matrix[:2, 2] = np.array([cx, cy]) - linear @ np.array([cx + shift[0], cy + shift[1]])
    return matrix


def transform_points(points, matrix) -> np.ndarray:
    """Apply a 3x3 affine matrix to (P, 2) x, y points; returns float32."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return (points @ matrix[:2, :2].T + matrix[:2, 2]).astype(np.float32)


def transform_boxes(boxes, matrix, method="ellipse") -> np.ndarray:
    """Axis-aligned (n, 4) x_min, y_min, x_max, y_max boxes after a 3x3 affine matrix (no clipping).

    "ellipse": the tight box of the transformed ellipse inscribed in each box; "corners": the box
    enclosing the four transformed corners. Both are exact when the matrix does not rotate.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    linear, offset = matrix[:2, :2], matrix[:2, 2]
    if method == "ellipse":
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2 @ linear.T + offset
        half = (boxes[:, 2:] - boxes[:, :2]) / 2
        # Half-extent along each output axis of {A diag(a, b) u : |u| = 1} is |row of A * (a, b)|.
        extent = np.sqrt(((half[:, None, :] * linear[None]) ** 2).sum(-1))
        out = np.concatenate([centre - extent, centre + extent], axis=1)
    elif method == "corners":
        x0, y0, x1, y1 = boxes.T
        corners = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x0, y1], 1), np.stack([x1, y1], 1)], 1)
        moved = corners @ linear.T + offset
        out = np.concatenate([moved.min(1), moved.max(1)], axis=1)
    else:
        raise ValueError(f"unknown box method {method!r}; valid: 'ellipse', 'corners'")
    return out.astype(np.float32)


class Augmenter:
    """Augments one example dict (see the module docstring); `__call__(example, seed, epoch, index)`.

    `registry` gives the tasks' `allow_flip` (TaskSpecs, or a mapping id -> TaskSpec); the FMC_UIA
    registry by default. An example whose task is not in it raises, rather than being flipped blind.
    """

    def __init__(self, config: AugmentConfig | None = None, registry: Iterable[TaskSpec] | Mapping[str, TaskSpec] | None = None):
        self.config = config if config is not None else AugmentConfig()
        specs = FMC_UIA_TASKS + EXTRA_TASKS if registry is None else registry
        specs = specs.values() if isinstance(specs, Mapping) else specs
        self.tasks = {spec.id: spec for spec in specs}

    @classmethod
    def identity(cls, registry=None) -> "Augmenter":
        """An augmenter that returns each example unchanged (evaluation, debugging)."""
        return cls(AugmentConfig(enabled=False), registry)

    def allow_flip(self, task: str) -> bool:
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r} for augmentation; pass the model's tasks as `registry`")
        return self.tasks[task].allow_flip and task not in self.config.no_flip_tasks

    def __call__(self, example: dict, seed: int, epoch: int, index: int) -> dict:
        if not self.config.enabled:
            return dict(example)
        return self.apply(example, self.sample_params(example, seed, epoch, index))

    # -- the random draw ----------------------------------------------------------------------------

    def sample_params(self, example: dict, seed: int, epoch: int, index: int) -> AugmentParams:
        """Draw the augmentation of `example` from (seed, epoch, index) alone.

        Geometry and intensity use two independent child streams, so the number of geometry retries
        (which depends on the labels) never shifts the intensity draw.
        """
        cfg = self.config
        geometry_rng, intensity_rng = (
            np.random.default_rng(child) for child in np.random.SeedSequence([int(seed), int(epoch), int(index)]).spawn(2)
        )
        width, height = _image_size(example["image"])
        allow_flip = self.allow_flip(example["task"])
        keep_size = not training_task_type(self.tasks[example["task"]]).allows_zoom
        points = example.get("points")
        boxes = example.get("boxes")

        flipped, fallback = False, True
        for attempt in range(cfg.max_tries):
            area, angle, flip_draw, sx, sy = geometry_rng.random(5)
            # Retries get milder (strength 1, then falling towards 0), so an example with a landmark
            # near the border gets a gentle transform rather than none. The first draw, the only one
            # for examples without points or boxes, has the full configured distribution.
            strength = 1.0 - attempt / cfg.max_tries
            zoom = 1.0 if keep_size else (cfg.scale[0] + area * (cfg.scale[1] - cfg.scale[0])) ** (-0.5 * strength)
            angle = (2 * angle - 1) * cfg.max_rotation * strength
            if attempt == 0:  # one flip decision per example, kept by the retries and the fallback
                flipped = allow_flip and flip_draw < cfg.flip_prob
            # The crop window (size / zoom) moves anywhere it stays inside the image (or, zoomed
            # out, anywhere it still contains the image).
            slack_x, slack_y = abs(width - width / zoom) / 2, abs(height - height / zoom) / 2
            shift = ((2 * sx - 1) * slack_x, (2 * sy - 1) * slack_y)
            matrix = affine_matrix(width, height, zoom, angle, shift, flipped)
            if self._targets_inside(matrix, points, boxes, width, height):
                fallback = False
                break
        if fallback:
            zoom, angle = 1.0, 0.0
            matrix = affine_matrix(width, height, flip=flipped)

        gain = intensity_rng.uniform(*cfg.gain)
        contrast = intensity_rng.uniform(*cfg.contrast)
        speckle = intensity_rng.uniform(0.0, cfg.speckle)
        # The noise field itself is drawn in `apply` from this seed, so `apply` is a pure function of
        # (example, params) and drawing params stays cheap.
        noise_seed = int(intensity_rng.integers(2**63))
        return AugmentParams(matrix, flipped, zoom, angle, gain, contrast, speckle, noise_seed, fallback)

    def _targets_inside(self, matrix, points, boxes, width, height) -> bool:
        if points is not None and len(points):
            moved = transform_points(points, matrix)
            moved = moved[np.isfinite(moved).all(1)]  # a missing landmark (NaN) constrains nothing
            if not _inside(moved, width, height):
                return False
        if boxes is not None and len(boxes):
            moved = transform_boxes(boxes, matrix, self.config.box_rotation).astype(np.float64)
            area = np.prod(moved[:, 2:] - moved[:, :2], axis=1)
            clipped = np.clip(moved, 0, [width, height, width, height])
            visible = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
            if (visible < self.config.min_box_visibility * area - 1e-6 * (area + 1)).any():
                return False
        return True

    # -- applying a draw ----------------------------------------------------------------------------

    def apply(self, example: dict, params: AugmentParams) -> dict:
        """A new example with `params` applied to the image and every target it carries."""
        out = dict(example)
        width, height = _image_size(example["image"])
        matrix = params.matrix
        # PIL's affine transform wants the output -> input map, first two rows.
        inverse = tuple(np.linalg.inv(matrix)[:2].ravel())

        out["image"] = _augment_image(example["image"], inverse, params)

        mask = example.get("mask")
        if mask is not None:
            out["mask"] = _warp_mask(mask, inverse, width, height)

        points = example.get("points")
        if points is not None:
            moved = transform_points(points, matrix)
            pairs = self.config.flip_point_pairs.get(example["task"], self.tasks[example["task"]].mirror_pairs)
            if params.flipped and pairs:
                order = np.arange(len(moved))
                for i, j in pairs:
                    order[i], order[j] = order[j], order[i]
                moved = moved[order]
            out["points"] = moved

        boxes = example.get("boxes")
        if boxes is not None:
            moved = transform_boxes(boxes, matrix, self.config.box_rotation)
            moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, width)
            moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, height)
            keep = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
            out["boxes"] = moved[keep]
            if example.get("class_labels") is not None:
                out["class_labels"] = np.asarray(example["class_labels"])[keep]
        return out


def _augment_image(image, inverse, params: AugmentParams):
    """Warp then intensity ops; returns the input's type (PIL or array) and dtype."""
    as_pil = isinstance(image, Image.Image)
    if as_pil and image.mode not in _PIL_NATIVE_UINT8 and image.mode not in ("I;16", "I", "F", "LA"):
        image = image.convert("RGB" if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV") else "L")
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {array.shape}")
    warped = _to_dtype(_intensity(_warp_image(array, inverse), params), array.dtype)
    return Image.fromarray(warped) if as_pil else warped


def _image_size(image) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return image.size
    shape = np.shape(image)
    return shape[1], shape[0]


def _inside(xy, width, height) -> bool:
    eps = 1e-6
    return bool(np.all((xy[:, 0] >= -eps) & (xy[:, 0] <= width + eps) & (xy[:, 1] >= -eps) & (xy[:, 1] <= height + eps)))


def _warp_image(array: np.ndarray, inverse) -> np.ndarray:
    """Bilinear warp with PIL (a few times faster than scipy.ndimage here); returns float32."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    kwargs = dict(resample=Image.Resampling.BILINEAR, fillcolor=0)
    if array.dtype == np.uint8 and (array.ndim == 2 or channels in (3, 4)):
        # PIL's native 8-bit path warps all channels at once.
        warped = Image.fromarray(array).transform((width, height), Image.Transform.AFFINE, inverse, **kwargs)
        return np.asarray(warped, dtype=np.float32)
    planes = array[..., None] if array.ndim == 2 else array
    out = np.empty((height, width, channels), np.float32)
    for c in range(channels):
        plane = Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32), mode="F")
        out[..., c] = np.asarray(plane.transform((width, height), Image.Transform.AFFINE, inverse, **kwargs))
    return out[..., 0] if array.ndim == 2 else out


def _warp_mask(mask, inverse, width, height):
    """Nearest-neighbour warp of a class-index mask; outside the source image is class 0."""
    as_pil = isinstance(mask, Image.Image)
    array = np.asarray(mask)
    if array.shape[:2] != (height, width):
        raise ValueError(f"mask shape {array.shape} does not match the image size {width}x{height} (W x H)")
    kwargs = dict(resample=Image.Resampling.NEAREST, fillcolor=0)
    if array.dtype == np.uint8 and array.ndim == 2:
        warped = np.asarray(Image.fromarray(array).transform((width, height), Image.Transform.AFFINE, inverse, **kwargs))
    else:  # wider integer masks: float32 holds class indices exactly, nearest never mixes them
        plane = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
        warped = np.asarray(plane.transform((width, height), Image.Transform.AFFINE, inverse, **kwargs)).astype(array.dtype)
    return Image.fromarray(warped) if as_pil else np.array(warped)


def _intensity(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Contrast about the mean, gain, then multiplicative speckle, in float32."""
    # gain * ((x - mean) * contrast + mean) as one scale and offset, in place on float32 (a numpy
    # float64 scalar would silently promote the whole image to float64).
    mean = float(image.mean(dtype=np.float64)) if params.contrast != 1.0 else 0.0
    scale = params.gain * params.contrast
    offset = params.gain * mean * (1.0 - params.contrast)
    image *= np.float32(scale)
    image += np.float32(offset)
    if params.speckle > 0:
        # Fully developed speckle in an L-look intensity image is gamma(L, 1/L): mean 1, std 1/sqrt(L).
        looks = 1.0 / params.speckle**2
        noise = np.random.default_rng(params.noise_seed).standard_gamma(looks, size=image.shape[:2], dtype=np.float32)
        noise *= np.float32(1.0 / looks)
        image *= noise if image.ndim == 2 else noise[..., None]
    return image


def _to_dtype(image: np.ndarray, dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        np.rint(image, out=image)
        return np.clip(image, info.min, info.max, out=image).astype(dtype)
    return image.astype(dtype)
