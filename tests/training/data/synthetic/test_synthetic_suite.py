"""The synthetic suite (training/data/synthetic/suite.py): determinism, registry fidelity, label geometry,
sizes, the datasets it serves."""

import numpy as np
import pytest

from m2dino_training.data.synthetic import EXAMPLE_LABEL_FIELDS, SyntheticDataset, SyntheticUltrasoundSuite
from m2dino_training.data.synthetic.renderer import field_of_view_at
from m2dino_training.data.synthetic.scenes import TASK_SCENES
from modeling_m2dino.tasks import FMC_UIA_TASKS

SMALL = dict(scale=0.01, image_size=64)


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
    assert set(TASK_SCENES) == {t.id for t in FMC_UIA_TASKS}
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
                assert field_of_view_at(TASK_SCENES[task_id].probe, pts[:, 0] / n, pts[:, 1] / n)[0].all(), task_id


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


