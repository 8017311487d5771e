"""The augmenter: labels follow the pixels (checked geometrically), determinism, flips, dtypes."""

import copy

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from m2dino_training.data.augment import AugmentConfig, Augmenter, affine_matrix, transform_boxes, transform_points
from modeling_m2dino.tasks import TaskSpec

SIZE = (160, 144)  # W, H: not square, so x/y mix-ups show
BACKGROUND, DISK, DOT = 20, 150, 255
DISK_CENTRE, DISK_RADIUS = (70.5, 76.5), 26
DOTS = [(30, 30), (120, 40), (130, 110)]  # (column, row) of 3x3 bright dots, away from the disk
GEOMETRY_ONLY = dict(gain=(1.0, 1.0), contrast=(1.0, 1.0), speckle=0.0)


def scene(dtype=np.uint8, rgb=False):
    """A bright disk (the mask, the box) and bright dots (the landmarks) on a dark background."""
    width, height = SIZE
    rows, cols = np.mgrid[:height, :width]
    disk = (cols + 0.5 - DISK_CENTRE[0]) ** 2 + (rows + 0.5 - DISK_CENTRE[1]) ** 2 <= DISK_RADIUS**2
    image = np.full((height, width), BACKGROUND, np.float64)
    image[disk] = DISK
    for c, r in DOTS:
        image[r - 1 : r + 2, c - 1 : c + 2] = DOT
    if dtype == np.uint16:
        image = image * 257
    image = image.astype(dtype)
    if rgb:
        image = np.repeat(image[..., None], 3, axis=2)
    box = np.array([[DISK_CENTRE[0] - DISK_RADIUS, DISK_CENTRE[1] - DISK_RADIUS, DISK_CENTRE[0] + DISK_RADIUS, DISK_CENTRE[1] + DISK_RADIUS]], np.float32)
    # Pixel centres are at +0.5 in the augmenter's continuous coordinates.
    points = np.array([[c + 0.5, r + 0.5] for c, r in DOTS] + [list(DISK_CENTRE)], np.float32)
    return {
        "image": image,
        "task": "cervix",
        "label": None,
        "mask": disk.astype(np.uint8),
        "boxes": box,
        "class_labels": np.array([0], np.int64),
        "points": points,
        "source": "synthetic",  # an extra key, to be kept
    }


def bbox(region):
    rows, cols = np.nonzero(region)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float64)


def box_iou(a, b):
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def dot_centroids(image):
    """Centroids (continuous x, y) of the bright dots: pixels brighter than the disk can be."""
    bright = image > (DISK + DOT) / 2
    labels, n = ndimage.label(bright)
    centres = ndimage.center_of_mass(image.astype(np.float64) * bright, labels, range(1, n + 1))
    return np.array([(c + 0.5, r + 0.5) for r, c in centres]).reshape(-1, 2)


@pytest.mark.parametrize("draw", range(24))
def test_targets_follow_the_pixels(draw):
    augmenter = Augmenter(AugmentConfig(max_rotation=15, scale=(0.7, 1.0), **GEOMETRY_ONLY))
    example = scene()
    out = augmenter(example, seed=draw, epoch=draw % 3, index=100 + draw)
    image = out["image"]
    assert image.shape == example["image"].shape and image.dtype == np.uint8

    # Mask: the bright disk region and the warped mask coincide.
    bright = (image > (BACKGROUND + DISK) / 2) & (image < (DISK + DOT) / 2 + 40)
    bright = ndimage.binary_opening(bright)  # drop the dots' blurred rims
    mask = out["mask"] == 1
    assert (np.logical_and(bright, mask).sum() / np.logical_or(bright, mask).sum()) > 0.9

    # Box: tight around the bright disk.
    assert out["boxes"].shape == (1, 4) and out["class_labels"].tolist() == [0]
    assert box_iou(out["boxes"][0].astype(np.float64), bbox(bright)) > 0.8

    # Points: each dot's point lands on its dot, the centre point on the disk's centre.
    centroids = dot_centroids(image)
    for point in out["points"][: len(DOTS)]:
        assert np.linalg.norm(centroids - point, axis=1).min() < 1.5
    rows, cols = np.nonzero(mask)
    assert np.linalg.norm(out["points"][-1] - (cols.mean() + 0.5, rows.mean() + 0.5)) < 1.5
    assert out["source"] == "synthetic"


def test_flip_is_an_exact_mirror():
    augmenter = Augmenter(AugmentConfig(scale=(1.0, 1.0), max_rotation=0, flip_prob=1.0, **GEOMETRY_ONLY))
    example = scene()
    out = augmenter(example, 0, 0, 0)
    np.testing.assert_array_equal(out["image"], example["image"][:, ::-1])
    np.testing.assert_array_equal(out["mask"], example["mask"][:, ::-1])
    width = SIZE[0]
    np.testing.assert_allclose(out["points"][:, 0], width - example["points"][:, 0], atol=1e-4)
    np.testing.assert_allclose(out["points"][:, 1], example["points"][:, 1], atol=1e-4)
    x0, y0, x1, y1 = example["boxes"][0]
    np.testing.assert_allclose(out["boxes"][0], [width - x1, y0, width - x0, y1], atol=1e-4)


def test_flip_point_pairs_are_swapped():
    config = AugmentConfig(scale=(1.0, 1.0), max_rotation=0, flip_prob=1.0, flip_point_pairs={"FUGC": [(0, 1)]}, **GEOMETRY_ONLY)
    example = dict(scene(), task="FUGC", points=np.array([[10.0, 20.0], [100.0, 30.0]], np.float32), mask=None, boxes=None)
    out = Augmenter(config)(example, 0, 0, 0)
    np.testing.assert_allclose(out["points"], [[SIZE[0] - 100.0, 30.0], [SIZE[0] - 10.0, 20.0]], atol=1e-4)


def test_deterministic_per_seed_epoch_index():
    augmenter = Augmenter()
    example = scene()
    first = augmenter(example, seed=3, epoch=1, index=7)
    # Other calls in between, and a disturbed global RNG, change nothing.
    augmenter(example, seed=3, epoch=2, index=7)
    np.random.seed(123)
    again = augmenter(example, seed=3, epoch=1, index=7)
    for key in ("image", "mask", "boxes", "points"):
        np.testing.assert_array_equal(first[key], again[key])
    for other in (dict(seed=3, epoch=2, index=7), dict(seed=3, epoch=1, index=8), dict(seed=4, epoch=1, index=7)):
        assert not np.array_equal(augmenter(example, **other)["image"], first["image"])


@pytest.mark.parametrize("task", ["fetal_head_pos_cls", "fetal_sacral_pos_cls", "cervix"])
def test_no_flip_for_position_tasks_and_configured_tasks(task):
    augmenter = Augmenter(AugmentConfig(flip_prob=0.9, no_flip_tasks=("cervix",)))
    example = dict(scene(), task=task, mask=None, boxes=None, points=None, label=1)
    for seed in range(200):
        params = augmenter.sample_params(example, seed, 0, seed)
        assert not params.flipped and np.linalg.det(params.matrix[:2, :2]) > 0


def test_flips_happen_where_allowed():
    augmenter = Augmenter(AugmentConfig(flip_prob=0.5))
    example = dict(scene(), task="fetal_plane_cls", mask=None, boxes=None, points=None, label=1)
    signs = [np.sign(np.linalg.det(augmenter.sample_params(example, 0, 0, i).matrix[:2, :2])) for i in range(200)]
    assert 60 < signs.count(-1) < 140


def test_points_and_boxes_stay_inside():
    width, height = SIZE
    example = dict(
        scene(),
        points=np.array([[6.0, 6.0], [width - 6.0, height - 6.0], [80.0, 70.0]], np.float32),
        boxes=np.array([[4.0, 50.0, 44.0, 100.0]], np.float32),  # close to the left edge
    )
    augmenter = Augmenter(AugmentConfig(max_rotation=10, scale=(0.6, 1.0)))
    fallbacks = 0
    for i in range(60):
        params = augmenter.sample_params(example, 0, 0, i)
        fallbacks += params.fallback
        out = augmenter.apply(example, params)
        x, y = out["points"].T
        assert (x >= 0).all() and (x <= width).all() and (y >= 0).all() and (y <= height).all()
        (x0, y0, x1, y1), = out["boxes"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        whole = transform_boxes(example["boxes"], params.matrix)[0]
        np.testing.assert_allclose(out["boxes"][0], whole, atol=1e-3)  # inside, so nothing was clipped
    assert fallbacks < 30  # the constraint is met by (milder) resampling, not by giving up


def test_a_box_on_the_border_is_augmented_when_clipping_is_allowed():
    example = dict(scene(), points=None, boxes=np.array([[0.0, 50.0, 40.0, 100.0]], np.float32))
    strict = Augmenter(AugmentConfig(flip_prob=0.0))
    assert sum(strict.sample_params(example, 0, 0, i).fallback for i in range(20)) > 5
    lenient = Augmenter(AugmentConfig(flip_prob=0.0, min_box_visibility=0.7))
    for i in range(20):
        params = lenient.sample_params(example, 0, 0, i)
        assert not params.fallback
        whole = transform_boxes(example["boxes"], params.matrix)[0]
        box = lenient.apply(example, params)["boxes"][0]
        assert box[0] >= 0 and np.prod(box[2:] - box[:2]) >= 0.7 * np.prod(whole[2:] - whole[:2]) - 1e-3


def test_a_box_outside_the_image_is_dropped_with_its_label():
    example = dict(scene(), points=None, boxes=np.array([[10, 10, 50, 50], [500, 500, 600, 600]], np.float32), class_labels=np.array([0, 3]))
    out = Augmenter()(example, 0, 0, 0)
    assert out["boxes"].shape == (1, 4) and out["class_labels"].tolist() == [0]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("rgb", [False, True])
def test_dtype_and_shape_are_kept(dtype, rgb):
    example = scene(dtype, rgb)
    out = Augmenter()(example, 0, 0, 5)
    assert out["image"].dtype == dtype and out["image"].shape == example["image"].shape
    assert out["mask"].dtype == np.uint8 and out["mask"].shape == example["mask"].shape
    assert out["points"].dtype == np.float32 and out["boxes"].dtype == np.float32


def test_gray_rgb_and_uint16_get_the_same_augmentation():
    augmenter = Augmenter()
    gray = augmenter(scene(), 1, 2, 3)["image"].astype(np.int64)
    rgb = augmenter(scene(rgb=True), 1, 2, 3)["image"].astype(np.int64)
    wide = augmenter(scene(np.uint16), 1, 2, 3)["image"].astype(np.float64)
    for channel in range(3):  # the speckle is shared by the channels
        assert np.abs(rgb[..., channel] - gray).max() <= 1
    assert np.abs(wide / 257 - gray).max() <= 2


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16"])
def test_pil_in_pil_out(mode):
    array = scene(np.uint16 if mode == "I;16" else np.uint8, rgb=mode == "RGB")["image"]
    example = dict(scene(), image=Image.fromarray(array), mask=Image.fromarray(scene()["mask"]))
    out = Augmenter()(example, 0, 0, 1)
    assert isinstance(out["image"], Image.Image) and out["image"].mode == mode and out["image"].size == SIZE
    assert isinstance(out["mask"], Image.Image) and out["mask"].size == SIZE


def test_input_is_not_mutated():
    example = scene()
    snapshot = copy.deepcopy(example)
    out = Augmenter(AugmentConfig(flip_prob=1.0))(example, 0, 0, 0)
    assert set(example) == set(snapshot)
    for key, value in snapshot.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(example[key], value)
            assert out[key] is not example[key] or key == "class_labels"
        else:
            assert example[key] == value


def test_intensity_ops():
    flat = dict(scene(), image=np.full(SIZE[::-1], 100, np.uint8), mask=None, boxes=None, points=None)
    no_geometry = dict(scale=(1.0, 1.0), max_rotation=0, flip_prob=0)
    gained = Augmenter(AugmentConfig(gain=(1.5, 1.5), contrast=(1, 1), speckle=0, **no_geometry))(flat, 0, 0, 0)["image"]
    assert (gained == 150).all()
    saturated = Augmenter(AugmentConfig(gain=(3.0, 3.0), contrast=(1, 1), speckle=0, **no_geometry))(flat, 0, 0, 0)["image"]
    assert (saturated == 255).all()
    augmenter = Augmenter(AugmentConfig(gain=(1, 1), contrast=(1, 1), speckle=0.3, **no_geometry))
    params = augmenter.sample_params(flat, 0, 0, 0)
    noisy = augmenter.apply(flat, params)["image"].astype(np.float64)
    assert abs(noisy.mean() - 100) < 1.5 and abs(noisy.std() / 100 - params.speckle) < 0.1 * params.speckle + 0.01


def test_identity_and_disabled():
    example = scene()
    for augmenter in (Augmenter.identity(), Augmenter(AugmentConfig(enabled=False))):
        out = augmenter(example, 0, 0, 0)
        assert out is not example
        for key in ("image", "mask", "boxes", "points"):
            np.testing.assert_array_equal(out[key], example[key])


def test_unknown_task_raises_and_a_custom_registry_works():
    example = dict(scene(), task="my_task")
    with pytest.raises(KeyError, match="my_task"):
        Augmenter()(example, 0, 0, 0)
    registry = [TaskSpec(id="my_task", type="segmentation", num_classes=2, allow_flip=False)]
    out = Augmenter(AugmentConfig(flip_prob=1.0), registry=registry)(example, 0, 0, 0)
    assert out["image"].shape == example["image"].shape


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        AugmentConfig(scale=(1.0, 0.5))
    with pytest.raises(ValueError):
        AugmentConfig(box_rotation="circle")
    with pytest.raises(ValueError):
        AugmentConfig(no_flip_tasks="cervix")


def test_matrix_helpers():
    matrix = affine_matrix(100, 80, zoom=2.0)
    np.testing.assert_allclose(transform_points([[50, 40], [60, 40]], matrix), [[50, 40], [70, 40]])
    rotated = affine_matrix(100, 100, angle=45)
    square = np.array([[40, 40, 60, 60]])
    ellipse, corners = transform_boxes(square, rotated, "ellipse")[0], transform_boxes(square, rotated, "corners")[0]
    np.testing.assert_allclose(ellipse, [40, 40, 60, 60], atol=1e-4)  # a circle's box does not grow
    np.testing.assert_allclose(corners, [50 - 10 * 2**0.5, 50 - 10 * 2**0.5, 50 + 10 * 2**0.5, 50 + 10 * 2**0.5], atol=1e-4)


def test_side_named_landmarks_keep_their_side_under_a_flip():
    """fetal_femur's points are its left and right ends (registry `mirror_pairs`): after any augmentation,
    point 0 is still the one further left."""
    image = np.zeros((64, 64), np.uint8)
    example = {"image": image, "task": "fetal_femur", "label": None, "mask": None, "boxes": None,
               "class_labels": None, "points": np.array([[20.0, 30.0], [44.0, 34.0]], np.float32)}
    augmenter = Augmenter(AugmentConfig(flip_prob=1.0, max_rotation=0.0, scale=(1.0, 1.0)))
    for index in range(20):
        points = augmenter(example, seed=0, epoch=0, index=index)["points"]
        assert points[0, 0] < points[1, 0]
