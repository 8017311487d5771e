"""The synthetic ultrasound suite: determinism, registry fidelity, label geometry, sizes, the on-disk layout."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m2dino_training.data.synthetic import (
    CSV_COLUMNS,
    EXAMPLE_LABEL_FIELDS,
    TRANSFER_PAIRS,
    SyntheticDataset,
    SyntheticUltrasoundSuite,
    _fov_points,
    _ANATOMY,
    main,
    write_challenge_layout,
)
from modeling_m2dino.task_types import TASK_TYPES
from modeling_m2dino.tasks import FMC_UIA_TASKS

SMALL = dict(scale=0.01, image_size=64)
SEG_FOLDERS = {2: "Two", 3: "Three", 4: "Four", 5: "Five"}


def same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def small_suite():
    return SyntheticUltrasoundSuite(seed=0, **SMALL)


@pytest.fixture(scope="module")
def all_examples(small_suite):
    """Every example of train and val at the smallest scale: {(task, split): [examples]}."""
    return {(t.id, split): [small_suite.example(t.id, split, i) for i in range(small_suite.size(t, split))]
            for t in small_suite.tasks for split in ("train", "val")}


def test_suite_covers_the_registry():
    suite = SyntheticUltrasoundSuite(**SMALL)
    assert [t.id for t in suite.tasks] == [t.id for t in FMC_UIA_TASKS]
    assert set(_ANATOMY) == {t.id for t in FMC_UIA_TASKS}
    subset = SyntheticUltrasoundSuite(tasks=["lung", "FUGC"], **SMALL)
    assert subset.task_ids == ["FUGC", "lung"]  # registry order
    with pytest.raises(ValueError, match="unknown synthetic task"):
        SyntheticUltrasoundSuite(tasks=["not_a_task"], **SMALL)


def test_examples_are_deterministic_and_regenerate_alone(small_suite):
    other = SyntheticUltrasoundSuite(seed=0, **SMALL)
    for task in ("fetal_abdomen_multi", "IUGC", "breast_3cls", "spinal_cord_injury_loc"):
        last = small_suite.size(task, "train") - 1
        forward = [small_suite.example(task, "train", i) for i in range(last + 1)]
        same(other.example(task, "train", last), forward[last])  # alone, in a fresh suite, out of order
        same(small_suite.example(task, "train", 0), forward[0])
    # A task subset draws the very same examples as the full suite.
    same(SyntheticUltrasoundSuite(seed=0, tasks=["lung"], **SMALL).example("lung", "val", 2),
         small_suite.example("lung", "val", 2))


def test_seed_split_and_index_change_the_image(small_suite):
    base = small_suite.example("fetal_head", "train", 1)["image"]
    assert not np.array_equal(base, SyntheticUltrasoundSuite(seed=1, **SMALL).example("fetal_head", "train", 1)["image"])
    assert not np.array_equal(base, small_suite.example("fetal_head", "val", 1)["image"])
    assert not np.array_equal(base, small_suite.example("fetal_head", "train", 2)["image"])


def test_schema_and_label_geometry(small_suite, all_examples):
    n = small_suite.image_size
    for (task_id, split), examples in all_examples.items():
        spec = next(t for t in FMC_UIA_TASKS if t.id == task_id)
        assert len(examples) >= 4
        for ex in examples:
            # Every example holds every type's label keys (None where its task's type has no such label).
            assert set(ex) == {"image", "task"} | set(EXAMPLE_LABEL_FIELDS)
            assert {"label", "mask", "boxes", "class_labels", "points"} <= set(EXAMPLE_LABEL_FIELDS)
            assert ex["task"] == task_id and ex["image"].shape == (n, n) and ex["image"].dtype == np.uint8
            assert ex["image"].std() > 5  # not blank
            kind = spec.type
            assert (ex["label"] is not None) == (kind == "classification")
            assert (ex["mask"] is not None) == (kind == "segmentation")
            assert (ex["boxes"] is not None) == (ex["class_labels"] is not None) == (kind == "detection")
            assert (ex["points"] is not None) == (kind == "regression")
            if kind == "classification":
                assert isinstance(ex["label"], int) and 0 <= ex["label"] < spec.num_classes
            if kind == "segmentation":
                assert ex["mask"].shape == (n, n) and ex["mask"].dtype == np.uint8
                # every foreground class is present in every mask
                assert set(np.unique(ex["mask"])) == set(range(spec.num_classes)), (task_id, np.unique(ex["mask"]))
            if kind == "detection":
                boxes = ex["boxes"]
                assert boxes.shape == (1, 4) and boxes.dtype == np.float32 and ex["class_labels"].tolist() == [0]
                x0, y0, x1, y1 = boxes[0]
                assert 0 <= x0 < x1 <= n and 0 <= y0 < y1 <= n
            if kind == "regression":
                pts = ex["points"]
                assert pts.shape == (spec.num_points, 2) and pts.dtype == np.float32
                assert ((pts >= 0) & (pts <= n)).all()
                # landmarks lie inside the probe's field of view, where they can be seen
                assert _fov_points(_ANATOMY[task_id].probe, pts[:, 0] / n, pts[:, 1] / n)[0].all(), task_id


def test_every_class_twice_in_every_split(small_suite, all_examples):
    for spec in small_suite.tasks:
        if spec.type != "classification":
            continue
        for split in ("train", "val", "test"):
            labels = [small_suite.class_of(spec, split, i) for i in range(small_suite.size(spec, split))]
            assert np.bincount(labels, minlength=spec.num_classes).min() >= 2, (spec.id, split)
        labels = [ex["label"] for ex in all_examples[(spec.id, "val")]]
        assert np.bincount(labels, minlength=spec.num_classes).min() >= 2


def test_sizes_follow_the_table_and_scale():
    full, tiny = SyntheticUltrasoundSuite(scale=1.0), SyntheticUltrasoundSuite(scale=0.001)
    assert full.split_sizes("fetal_head") == {"train": 500, "val": 125, "test": 125}
    assert full.size("fetal_plane_cls", "train") > full.size("breast_2cls", "train") > full.size("lung", "train")
    assert tiny.split_sizes("fetal_plane_cls")["val"] == 12 and tiny.split_sizes("cervix")["train"] == 4
    with pytest.raises(IndexError):
        tiny.example("cervix", "train", 4)
    with pytest.raises(ValueError, match="unknown split"):
        tiny.size("cervix", "dev")


@pytest.mark.parametrize("size", [64, 224])
def test_image_sizes(size):
    suite = SyntheticUltrasoundSuite(scale=0.01, image_size=size)
    for task in ("cardiac_multi", "fetal_femur", "uterine_fibroid_det", "lung_2cls"):
        ex = suite.example(task, "train", 0)
        assert ex["image"].shape == (size, size)
        if ex["mask"] is not None:
            assert ex["mask"].shape == (size, size) and ex["mask"].max() == 3
        if ex["points"] is not None:
            assert (ex["points"] <= size).all()


@pytest.mark.parametrize("bad", [100, 63, 16, 0, 224.0])
def test_rejects_bad_image_size(bad):
    with pytest.raises(ValueError, match="multiple of 16"):
        SyntheticUltrasoundSuite(image_size=bad)


def test_segmentation_cues_are_visible(small_suite):
    """Each labelled structure differs from its surroundings: mean grey inside vs a ring just outside."""
    from scipy import ndimage

    for spec in small_suite.tasks:
        if spec.type != "segmentation":
            continue
        for cls in range(1, spec.num_classes):
            diffs = []
            for i in range(4):
                ex = small_suite.example(spec, "train", i)
                inside = ex["mask"] == cls
                ring = ndimage.binary_dilation(inside, iterations=3) & (ex["mask"] != cls)
                diffs.append(abs(ex["image"][inside].mean() - ex["image"][ring].mean()))
            assert np.median(diffs) > 8, (spec.id, spec.labels[cls], diffs)


def test_dataset_interleaves_every_example_once(small_suite):
    ds = small_suite.dataset("val", tasks=["cervix", "breast_2cls", "FUGC"])
    sizes = {t: small_suite.size(t, "val") for t in ("cervix", "breast_2cls", "FUGC")}
    pairs = [ds.locate(k) for k in range(len(ds))]
    assert len(ds) == sum(sizes.values()) and len(set(pairs)) == len(pairs)
    assert {t for t, _ in pairs[:3]} == set(sizes)  # interleaved, not task after task
    same(ds[5], small_suite.example(*pairs[5][:1], "val", pairs[5][1]))
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert small_suite.benchmark(5) > 0


def test_dataset_cache_returns_what_the_suite_draws_and_cannot_be_edited_through_an_example(small_suite):
    ds = small_suite.dataset("val", tasks=["cervix", "breast_2cls"])
    task, index = ds.locate(2)
    first = ds[2]
    first["image"][:] = 0  # a caller editing its example in place
    first["mask"][:] = 9
    again = ds[2]
    same(again, small_suite.example(task, "val", index))
    assert (task, index) in ds._cache
    uncached = SyntheticDataset(small_suite, "val", ds.tasks, cache_bytes=0)
    same(uncached[2], again)
    assert not uncached._cache


def test_cli_writes_the_challenge_layout(tmp_path, capsys):
    out = tmp_path / "synth"
    suite = SyntheticUltrasoundSuite(seed=1, **SMALL)
    assert main(["--out", str(out), "--scale", "0.01", "--image-size", "64", "--seed", "1"]) == 0
    assert "images/s" in capsys.readouterr().out
    assert (out / "suite_grid.png").stat().st_size > 10_000
    for split in ("train", "val"):
        csv_dir = out / split / "csv_files"
        files = sorted(csv_dir.glob("*.csv"))
        assert len(files) >= 2
        rows = []
        for f in files:
            with open(f, newline="") as fh:
                reader = csv.DictReader(fh)
                assert reader.fieldnames == CSV_COLUMNS
                rows += list(reader)
        assert len(rows) == sum(suite.size(t, split) for t in suite.tasks)
        assert {r["task_id"] for r in rows} == {t.id for t in FMC_UIA_TASKS}
        index = {}
        for r in rows:
            index[r["task_id"]] = index.get(r["task_id"], -1) + 1  # rows are in index order per task
            spec = next(t for t in FMC_UIA_TASKS if t.id == r["task_id"])
            ex = suite.example(spec, split, index[spec.id])
            assert r["task_name"] == TASK_TYPES[spec.type].csv_name
            image_file = (csv_dir / r["image_path"]).resolve()
            assert image_file.is_relative_to(out / split)
            with Image.open(image_file) as im:
                grey = np.asarray(im.convert("L"))
            assert np.array_equal(grey, ex["image"])
            if spec.type == "segmentation":
                assert Path(r["image_path"]).parts[:3] == ("..", "Segmentation", SEG_FOLDERS[spec.num_classes])
                with Image.open(csv_dir / r["mask_path"]) as m:
                    assert m.mode == "L" and np.array_equal(np.asarray(m), ex["mask"])
            else:
                assert r["mask_path"] == ""
            if spec.type == "classification":
                assert int(r["mask"]) == ex["label"]
            if spec.type == "regression":
                assert int(r["num_classes"]) == spec.num_points
                pts = np.array([json.loads(r[f"point_{p + 1}_xy"]) for p in range(spec.num_points)], np.float32)
                assert np.array_equal(pts, ex["points"])  # exact round trip
            if spec.type == "detection":
                box = np.array([float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")], np.float32)
                assert np.array_equal(box, ex["boxes"][0])
        modes = {Image.open(csv_dir / r["image_path"]).mode for r in rows}
        assert modes == {"L", "RGB"}
    # a non-empty folder is refused unless --overwrite
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--scale", "0.01", "--image-size", "64"])
    with pytest.raises(FileExistsError):
        write_challenge_layout(out, ("val",), suite=suite, grid=False)
    write_challenge_layout(out, ("val",), suite=suite, overwrite=True, grid=False)
    assert sorted(p.name for p in out.iterdir()) == ["val"]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folder left behind


def lesion_contrast(suite, task, split, index):
    """Mean grey inside the example's lesion minus the mean grey of a 3-pixel ring around it."""
    from scipy import ndimage

    lesion = suite.part_mask(task, split, index, "lesion")
    ring = ndimage.binary_dilation(lesion, iterations=3) & ~lesion
    image = suite.example(task, split, index)["image"].astype(np.float64)
    return image[lesion].mean() - image[ring].mean()


def contrast_by_class(suite, task):
    """{class name: [lesion contrast of every train example of that class]} (classes with a lesion)."""
    spec = next(t for t in FMC_UIA_TASKS if t.id == task)
    out = {}
    for i in range(suite.size(task, "train")):
        name = spec.labels[suite.class_of(task, "train", i)]
        if name != "normal":
            out.setdefault(name, []).append(lesion_contrast(suite, task, "train", i))
    return out


def test_transfer_pairs_share_or_oppose_the_lesion_cue():
    """The consistent pair: malignant lesions are brighter than their surroundings in both tasks, benign ones
    darker. The conflicting pair: the same cue with the opposite meaning in its second task."""
    suite = SyntheticUltrasoundSuite(scale=0.1, image_size=64, seed=3)
    first, second = TRANSFER_PAIRS["consistent"]
    assert TRANSFER_PAIRS["conflicting"][0] == first
    conflicting = TRANSFER_PAIRS["conflicting"][1]
    for task in (first, second):
        contrast = contrast_by_class(suite, task)
        assert min(contrast["malignant"]) > 20 and max(contrast["benign"]) < -20, (task, contrast)
    contrast = contrast_by_class(suite, conflicting)
    assert max(contrast["malignant"]) < -10 and min(contrast["benign"]) > 20, (conflicting, contrast)
    # The probe only reads a part's mask: the example's image is the one the suite yields.
    assert np.array_equal(suite._draw(next(t for t in FMC_UIA_TASKS if t.id == first), "train", 2, {"lesion": 1})[3],
                          suite.example(first, "train", 2)["image"])


@pytest.mark.parametrize("task, marker, body", [("fetal_head_pos_cls", "occiput", "head"),
                                                 ("fetal_sacral_pos_cls", "sacrum", "trunk")])
def test_position_classes_point_where_their_marker_is(task, marker, body):
    """Class k points at -90 + 45 k degrees (image up, then clockwise): the bony marker lies in that direction
    from the centre of the head or trunk."""
    suite = SyntheticUltrasoundSuite(scale=0.1, image_size=224, seed=1)
    for i in range(suite.size(task, "val")):
        label = suite.class_of(task, "val", i)
        mark_y, mark_x = np.argwhere(suite.part_mask(task, "val", i, marker)).mean(0)
        body_y, body_x = np.argwhere(suite.part_mask(task, "val", i, body)).mean(0)
        angle = np.degrees(np.arctan2(mark_y - body_y, mark_x - body_x))
        off = (angle - (-90 + 45 * label) + 180) % 360 - 180
        assert abs(off) < 22.5, (task, i, label, angle)


@pytest.mark.parametrize("task", ["fetal_head_pos_cls", "fetal_sacral_pos_cls"])
def test_position_cues_are_visible_at_64_px(task):
    """The 8-way position is readable from a 64 px image: even a nearest-class-mean template matcher on raw
    pixels gets most validation images right (chance is 1/8; with the earlier ~3 px bone marker it got 0.18)."""
    suite = SyntheticUltrasoundSuite(scale=1.0, image_size=64, seed=0)

    def load(split):
        n = suite.size(task, split)
        images = np.stack([suite.example(task, split, i)["image"].ravel().astype(np.float64) for i in range(n)])
        images -= images.mean(1, keepdims=True)
        images /= np.linalg.norm(images, axis=1, keepdims=True)
        return images, np.array([suite.class_of(task, split, i) for i in range(n)])

    train, train_labels = load("train")
    val, val_labels = load("val")
    templates = np.stack([train[train_labels == k].mean(0) for k in range(8)])
    accuracy = (np.argmax(val @ templates.T, 1) == val_labels).mean()
    assert accuracy > 0.5, accuracy
