"""The challenge-layout reader and the datasets-folder reader, on fixtures written in the real formats."""

import json
import logging
import os
import stat

import datasets
import numpy as np
import pytest
from PIL import Image

from fixtures import CSV_COLUMNS, read_csv, small_layout, snapshot, to_hf_dataset, write_challenge_layout, write_csv
from m2dino_training.data import DataError
from m2dino_training.data.fmc_uia import FMCUIADataError, load_fmc_uia, load_report, stored_column
from m2dino_training.data.hf_folder import HFFolderDataError, load_data, load_hf_folder
from modeling_m2dino.tasks import FMC_UIA_TASKS, TaskSpec

pytest.importorskip("pydicom")  # the layout fixture has a DICOM row


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """One challenge layout shared by the read-only tests: (root, expected examples by source)."""
    root = str(tmp_path_factory.mktemp("fmc_uia"))
    expected = write_challenge_layout(root)
    return root, expected


def _all_examples(dataset_dict):
    return {example["source"]: (name, example) for name in dataset_dict for example in dataset_dict[name]}


def _assert_example(example, want):
    assert example["task"] == want["task"]
    assert example["label"] == want.get("label")
    image = example["image"]
    if want["image_path"].endswith(".dcm"):
        assert isinstance(image, np.ndarray) and image.dtype == np.uint16
        assert example["bits_stored"] == want["bits_stored"]
    else:
        assert isinstance(image, Image.Image) and example["bits_stored"] is None
    np.testing.assert_array_equal(np.asarray(image), want["image"])
    if "mask" in want:
        assert example["mask"].dtype == np.uint8
        np.testing.assert_array_equal(example["mask"], want["mask"])
    else:
        assert example["mask"] is None
    if "boxes" in want:
        assert example["boxes"].dtype == np.float32 and example["class_labels"].dtype == np.int64
        np.testing.assert_array_equal(example["boxes"], np.asarray(want["boxes"], dtype=np.float32))
        np.testing.assert_array_equal(example["class_labels"], want["class_labels"])
    else:
        assert example["boxes"] is None and example["class_labels"] is None
    if "points" in want:
        assert example["points"].dtype == np.float32 and example["points"].shape == (3, 2)
        np.testing.assert_array_equal(example["points"], np.asarray(want["points"], dtype=np.float32))
    else:
        assert example["points"] is None


def _make_read_only(root):
    for folder, dirs, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(folder, name), stat.S_IRUSR | stat.S_IRGRP)
        os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)


def _make_writable(root):
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, stat.S_IRWXU)
        for name in files:
            os.chmod(os.path.join(folder, name), stat.S_IRUSR | stat.S_IWUSR)


# ------------------------------------------------------------------------------------------------------
# Loading a good layout


def test_loads_every_label_exactly(layout):
    root, expected = layout
    loaded = load_fmc_uia(root, num_workers=2)
    assert isinstance(loaded, datasets.DatasetDict) and set(loaded) == {"train", "val"}
    examples = _all_examples(loaded)
    assert set(examples) == set(expected)  # every row, once
    for source, (_, example) in examples.items():
        _assert_example(example, expected[source])
    # Rows keep file/line order, and the task column is readable without decoding images.
    sources = stored_column(loaded["train"], "source")
    assert sources == sorted(sources, key=lambda s: (s.split(":")[0], int(s.split(":")[1])))
    assert set(stored_column(loaded["train"], "task")) == {"cardiac_multi", "cervix", "breast_3cls", "thyroid_nodule_det", "IUGC"}


def test_split_is_deterministic_complete_and_recorded(layout):
    root, _ = layout
    first = load_fmc_uia(root, seed=3)
    second = load_fmc_uia(root, seed=3, num_workers=0)
    for name in ("train", "val"):
        assert stored_column(first[name], "source") == stored_column(second[name], "source")
        assert set(stored_column(first[name], "task")) == {"cardiac_multi", "cervix", "breast_3cls", "thyroid_nodule_det", "IUGC"}
    report = load_report(first["val"])
    assert report["split_source"] == "seeded" and report["split_name"] == "val"
    assert report["split_config"]["seed"] == 3 and report["split_config"]["val_fraction"] == 0.2
    assert report["split_config"]["counts"]["breast_3cls"] == {"train": 8, "val": 2}
    assert report["skipped"] == {"train": {}, "val": {}}
    # split="train" gives the same rows as the DatasetDict's train split.
    assert stored_column(load_fmc_uia(root, split="train", seed=3), "source") == stored_column(first["train"], "source")
    other_seed = load_fmc_uia(root, seed=4)
    assert stored_column(other_seed["val"], "source") != stored_column(first["val"], "source")


def test_read_only_root_and_nothing_written(tmp_path):
    root = str(tmp_path / "ro")
    write_challenge_layout(root, with_dicom=False)
    before = snapshot(root)
    _make_read_only(root)
    try:
        loaded = load_fmc_uia(root)
        assert len(loaded["train"]) + len(loaded["val"]) == 29
        assert loaded["val"][0]["image"] is not None
    finally:
        _make_writable(root)
    assert snapshot(root) == before


def _class_layout(root, rows_per_class, shuffle_seed, files=2):
    """A classification-only layout (lung_2cls); CSV rows shuffled and spread over `files` files."""
    os.makedirs(os.path.join(root, "Classification"), exist_ok=True)
    rows = []
    for cls, count in enumerate(rows_per_class):
        for i in range(count):
            relative = f"Classification/c{cls}_{i}.png"
            if not os.path.exists(os.path.join(root, relative)):
                Image.fromarray(np.full((8, 8), i + 100 * cls, dtype=np.uint8)).save(os.path.join(root, relative))
            rows.append({"image_path": f"../{relative}", "task_id": "lung_2cls", "task_name": "classification",
                         "mask": cls})  # fmt: skip
    order = np.random.default_rng(shuffle_seed).permutation(len(rows))
    os.makedirs(os.path.join(root, "csv_files"), exist_ok=True)
    for name in os.listdir(os.path.join(root, "csv_files")):
        os.remove(os.path.join(root, "csv_files", name))
    for f in range(files):
        write_csv(os.path.join(root, "csv_files", f"index_{f}.csv"), [rows[i] for i in order[f::files]])


def _val_images(dataset_dict):
    return sorted(os.path.basename(path) for path in stored_column(dataset_dict["val"], "image_path"))


def test_split_is_stratified_and_stable_under_reordering_and_skipping(tmp_path):
    root = str(tmp_path)
    _class_layout(root, [30, 10], shuffle_seed=0)
    loaded = load_fmc_uia(root)
    labels = stored_column(loaded["val"], "label")
    assert len(labels) == 8 and labels.count(0) == 6 and labels.count(1) == 2
    # The same rows in another order and other files: the same split.
    _class_layout(root, [30, 10], shuffle_seed=1, files=3)
    assert _val_images(load_fmc_uia(root)) == _val_images(loaded)
    # A bad row does not move the good ones: the split is drawn before anything is skipped.
    val_image = os.path.join(root, "Classification", _val_images(loaded)[0])
    os.remove(val_image)
    skipped = load_fmc_uia(root, on_error="skip")
    report = load_report(skipped["train"])
    assert report["num_skipped"] == 1 and report["skipped"]["val"] == {"lung_2cls": 1}
    assert report["split_config"]["counts"]["lung_2cls"] == {"train": 32, "val": 8}  # counted before skipping
    assert _val_images(skipped) == _val_images(loaded)[1:]


def test_train_val_folders_are_the_splits(tmp_path):
    train = write_challenge_layout(str(tmp_path / "train"), seed=1, with_dicom=False)
    val = write_challenge_layout(str(tmp_path / "val"), seed=2, with_dicom=False)
    loaded = load_fmc_uia(str(tmp_path))
    assert {s.split("/", 1)[1] for s in stored_column(loaded["train"], "source")} == set(train)
    assert {s.split("/", 1)[1] for s in stored_column(loaded["val"], "source")} == set(val)
    assert loaded["val"][0]["source"].startswith("val/csv_files/")
    assert load_report(loaded["train"])["split_source"] == "folders"
    only_val = load_fmc_uia(str(tmp_path), split="validation")
    assert isinstance(only_val, datasets.Dataset) and stored_column(only_val, "source") == stored_column(loaded["val"], "source")
    with pytest.raises(ValueError, match="unknown split 'test'; this dataset has: train, val"):
        load_fmc_uia(str(tmp_path), split="test")


def test_task_filter_and_custom_registry(layout, tmp_path):
    root, _ = layout
    only = load_fmc_uia(root, tasks=["cervix", "IUGC"])
    assert set(stored_column(only["train"], "task")) | set(stored_column(only["val"], "task")) == {"cervix", "IUGC"}
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['Cervix'\]; valid task ids: FUGC, IUGC"):
        load_fmc_uia(root, tasks=["Cervix"])
    # A lab's own task: a registry entry is all it takes.
    _class_layout(str(tmp_path), [3, 3], shuffle_seed=0)
    path = os.path.join(str(tmp_path), "csv_files", "index_0.csv")
    rows = read_csv(path)
    for row in rows:
        row["task_id"] = "my_task"
    write_csv(path, rows)
    registry = list(FMC_UIA_TASKS) + [TaskSpec(id="my_task", type="classification", num_classes=2)]
    loaded = load_fmc_uia(str(tmp_path), registry=registry)
    assert set(stored_column(loaded["train"], "task")) | set(stored_column(loaded["val"], "task")) == {"my_task", "lung_2cls"}
    with pytest.raises(FMCUIADataError, match="unknown task_id 'my_task'"):
        load_fmc_uia(str(tmp_path))


# ------------------------------------------------------------------------------------------------------
# Bad rows: each problem names the CSV file, the line and the field


def _write_bad(root, row_index, change, columns=CSV_COLUMNS):
    rows = small_layout(root)
    change(rows[row_index], root)
    write_csv(os.path.join(root, "csv_files", "index.csv"), rows, columns)
    return os.path.join(root, "csv_files", "index.csv"), row_index + 2  # header is line 1


def _set(**cells):
    def change(row, root):
        row.update(cells)

    return change


def _write_file(relative, writer):
    def change(row, root):
        writer(os.path.join(root, relative))

    return change


_BAD_MASK_VALUE = np.full((20, 30), 4, dtype=np.uint8)


def _dicom_cine(path):
    """A 3-frame DICOM written under a .png name: found by content; the test asks for frame 7."""
    from fixtures import write_dicom

    write_dicom(path, np.zeros((3, 20, 30), dtype=np.uint8), "MONOCHROME2")
BAD_CASES = {
    "missing image": (0, _set(image_path="../Segmentation/Four/nope.png"), "image_path", "image file not found"),
    "unreadable image": (1, _write_file("Classification/a.png", lambda p: open(p, "wb").write(b"not a png")),
                         "image_path", "cannot read image"),
    "unknown task": (1, _set(task_id="breast_9cls"), "task_id", "unknown task_id 'breast_9cls'; valid task ids: FUGC, IUGC"),
    "empty task": (1, _set(task_id=""), "task_id", "empty"),
    "task name disagrees": (0, _set(task_name="classification"), "task_name",
                            "'classification' disagrees with the registry: task 'cardiac_multi' is a segmentation task"),
    "mask value too large": (0, _write_file("Segmentation/Four/mask.png", lambda p: Image.fromarray(_BAD_MASK_VALUE).save(p)),
                             "mask_path", "mask value 4 >= num_classes 4 of task 'cardiac_multi'"),
    "mask size differs": (0, _write_file("Segmentation/Four/mask.png",
                                         lambda p: Image.fromarray(np.zeros((20, 31), np.uint8)).save(p)),
                          "mask_path", "mask is 31x20 (width x height) but its image is 30x20"),
    "missing mask": (0, _set(mask_path="../Segmentation/Four/gone.png"), "mask_path", "mask file not found"),
    "colour mask": (0, _write_file("Segmentation/Four/mask.png",
                                   lambda p: Image.fromarray(np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)).save(p)),
                    "mask_path", "colour (RGB) image"),
    "box outside image": (2, _set(x_max="30.5"), "x_max", "box [1.0, 2.0, 30.5, 19.5] lies outside the 30x20 image"),
    "box negative": (2, _set(y_min="-1"), "y_min", "lies outside"),
    "box x_max <= x_min": (2, _set(x_min="29"), "x_max", "x_max 29.0 <= x_min 29.0"),
    "box y_max <= y_min": (2, _set(y_max="1"), "y_max", "y_max 1.0 <= y_min 2.0"),
    "box coordinate empty": (2, _set(y_min=""), "y_min", "empty"),
    "box coordinate unparseable": (2, _set(x_min="1,5"), "x_min", "'1,5' is not a number"),
    "point empty": (3, _set(point_2_xy=""), "point_2_xy", "empty"),
    "point unparseable": (3, _set(point_1_xy="[1, oops]"), "point_1_xy", "'[1, oops]' is not a point [x, y]"),
    "point with one value": (3, _set(point_3_xy="[4]"), "point_3_xy", "is not a point"),
    "point outside image": (3, _set(point_3_xy="[31, 2]"), "point_3_xy", "point [31.0, 2.0] lies outside the 30x20 image"),
    "point count disagrees": (3, _set(num_classes="2"), "num_classes", "row says 2 points but task 'IUGC' has 3"),
    "class count disagrees": (1, _set(num_classes="2"), "num_classes", "row says 2 classes but task 'breast_3cls' has 3"),
    "segmentation class count disagrees": (0, _set(num_classes="2"), "num_classes",
                                           "row says 2 classes but task 'cardiac_multi' has 4"),
    "extra point": (3, _set(task_id="FUGC", num_classes="2"), "point_3_xy",
                    "task 'FUGC' has 2 points but this cell holds another one"),
    "bad dicom frame": (1, _write_file("Classification/a.png", lambda p: _dicom_cine(p)), "image_path",
                        "frame 7 out of range: the file has 3 frame(s)"),
    "class empty": (1, _set(mask=""), "mask", "empty"),
    "class nan": (1, _set(mask="nan"), "mask", "empty"),
    "class unparseable": (1, _set(mask="benign"), "mask", "class 'benign' is not an integer"),
    "class not integral": (1, _set(mask="1.5"), "mask", "class '1.5' is not an integer"),
    "class out of range": (1, _set(mask="3"), "mask", "class 3 out of range for task 'breast_3cls' (3 classes: 0..2)"),
    "class negative": (1, _set(mask="-1"), "mask", "class -1 out of range"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_row_is_named_by_file_line_and_field(tmp_path, case):
    row_index, change, field, fragment = BAD_CASES[case]
    csv_path, line = _write_bad(str(tmp_path), row_index, change)
    with pytest.raises(FMCUIADataError) as caught:
        load_fmc_uia(str(tmp_path), num_workers=1, dicom_frame=7 if case == "bad dicom frame" else "middle")
    message = str(caught.value)
    assert message.startswith(f"{csv_path}, line {line}, field '{field}': "), message
    assert fragment in message, message
    assert (caught.value.line, caught.value.field, caught.value.more) == (line, field, 0)
    assert isinstance(caught.value, DataError) and caught.value.where == f"{csv_path}, line {line}"


def test_missing_point_column(tmp_path):
    columns = [c for c in CSV_COLUMNS if c != "point_3_xy"]
    csv_path, line = _write_bad(str(tmp_path), 3, lambda row, root: row.pop("point_3_xy"), columns)
    with pytest.raises(FMCUIADataError, match="field 'point_3_xy': column 'point_3_xy' is missing from the CSV header"):
        load_fmc_uia(str(tmp_path))


def test_missing_class_column(tmp_path):
    columns = [c for c in CSV_COLUMNS if c != "mask"]
    csv_path, line = _write_bad(str(tmp_path), 1, lambda row, root: row.pop("mask"), columns)
    with pytest.raises(FMCUIADataError) as caught:
        load_fmc_uia(str(tmp_path))
    assert str(caught.value) == f"{csv_path}, line 3, field 'mask': column 'mask' is missing from the CSV header"


def test_malformed_csv_rows(tmp_path):
    root = str(tmp_path)
    rows = small_layout(root)
    path = os.path.join(root, "csv_files", "index.csv")
    write_csv(path, rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("../Classification/a.png,,breast_3cls,classification,1,,,,,,,,,surplus\n")
        handle.write("../Classification/a.png,,breast_3cls\n")  # a short row: the rest is empty
    with pytest.raises(FMCUIADataError) as caught:
        load_fmc_uia(root)
    assert str(caught.value).startswith(f"{path}, line 6, field 'row': 1 more cell(s) than the header has columns")
    assert caught.value.more == 1
    report = load_report(load_fmc_uia(root, on_error="skip", val_fraction=0)["train"])
    assert report["problems"][1] == f"{path}, line 7, field 'task_name': empty"
    header = ",".join(CSV_COLUMNS + ["mask"])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header + "\n")
    with pytest.raises(FMCUIADataError, match=r"index.csv, line 1, field 'mask': column appears more than once"):
        load_fmc_uia(root)


def test_sixteen_bit_png_and_dicom_frame_choice(tmp_path):
    root = str(tmp_path)
    rows = small_layout(root)
    wide = (np.arange(20 * 30, dtype=np.uint16) * 97).reshape(20, 30)
    Image.fromarray(wide).save(os.path.join(root, "Classification/a.png"))  # a 16-bit grayscale PNG
    cine = np.stack([np.full((20, 30), v, dtype=np.uint8) for v in (10, 20, 30)])
    from fixtures import write_dicom

    write_dicom(os.path.join(root, "Regression/a.dcm"), cine, "MONOCHROME2")
    rows[3]["image_path"] = "../Regression/a.dcm"
    write_csv(os.path.join(root, "csv_files", "index.csv"), rows)
    loaded = load_fmc_uia(root, val_fraction=0, split="train", dicom_frame=0)
    by_task = {example["task"]: example for example in loaded}
    image = by_task["breast_3cls"]["image"]
    assert image.dtype == np.uint16 and by_task["breast_3cls"]["bits_stored"] == 16
    np.testing.assert_array_equal(image, wide)
    np.testing.assert_array_equal(by_task["IUGC"]["image"], cine[0])
    middle = {e["task"]: e for e in load_fmc_uia(root, val_fraction=0, split="train")}["IUGC"]
    np.testing.assert_array_equal(middle["image"], cine[1])
    assert middle["bits_stored"] == 8 and load_report(loaded)["dicom_frame"] == 0


def test_first_problem_in_file_order_and_count_of_the_rest(tmp_path):
    root = str(tmp_path)
    rows = small_layout(root)
    bad_class = dict(rows[1], mask="7")
    bad_box = dict(rows[2], x_max="0")
    # b.csv has a problem on line 2, a.csv on line 4: a.csv comes first.
    write_csv(os.path.join(root, "csv_files", "b.csv"), [bad_class] + rows)
    write_csv(os.path.join(root, "csv_files", "a.csv"), rows[:2] + [bad_box] + rows[2:])
    with pytest.raises(FMCUIADataError) as caught:
        load_fmc_uia(root)
    assert caught.value.csv_file.endswith("a.csv") and caught.value.line == 4 and caught.value.field == "x_max"
    assert "(and 1 more row(s) with problems" in str(caught.value)


def test_skip_drops_exactly_the_bad_rows_and_reports_them(layout, tmp_path, caplog):
    source_root, expected = layout
    root = str(tmp_path / "copy")
    write_challenge_layout(root)  # same seed: the same files and rows as `layout`
    # Break four rows of three tasks in both files; none of the changes touches a row's task, class or
    # paths, so the clean load's split applies to the survivors unchanged.
    a = read_csv(os.path.join(root, "csv_files", "part_a.csv"))
    b = read_csv(os.path.join(root, "csv_files", "part_b.csv"))
    broken = set()

    def first(rows, name, task):
        for line, row in enumerate(rows, start=2):
            source = f"csv_files/{name}:{line}"
            if row["task_id"] == task and source not in broken and row["image_path"].endswith(".png"):
                broken.add(source)
                return row

    def on_disk(row, column):
        return os.path.join(root, "csv_files", row[column])

    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(on_disk(first(a, "part_a.csv", "cardiac_multi"), "mask_path"))
    with open(on_disk(first(b, "part_b.csv", "breast_3cls"), "image_path"), "wb") as handle:
        handle.write(b"truncated")
    first(b, "part_b.csv", "IUGC")["point_2_xy"] = ""
    first(a, "part_a.csv", "breast_3cls")["task_name"] = "detection"
    write_csv(os.path.join(root, "csv_files", "part_a.csv"), a)
    write_csv(os.path.join(root, "csv_files", "part_b.csv"), b)

    with pytest.raises(FMCUIADataError, match="and 3 more row"):
        load_fmc_uia(root)
    with caplog.at_level(logging.WARNING):
        loaded = load_fmc_uia(root, on_error="skip")
    assert "skipped 4 row(s)" in caplog.text
    examples = _all_examples(loaded)
    assert set(examples) == set(expected) - broken
    for source, (_, example) in examples.items():
        _assert_example(example, expected[source])
    report = load_report(loaded["train"])
    per_task = {}
    for split in report["skipped"].values():
        for task, count in split.items():
            per_task[task] = per_task.get(task, 0) + count
    assert per_task == {"cardiac_multi": 1, "breast_3cls": 2, "IUGC": 1}
    assert report["num_skipped"] == 4 and len(report["problems"]) == 4
    assert report["rows"]["train"] == dict(sorted(_count_tasks(loaded["train"]).items()))
    # The good rows keep the split they have in the clean load.
    clean = _all_examples(load_fmc_uia(source_root))
    assert all(clean[source][0] == split for source, (split, _) in examples.items())


def _count_tasks(dataset):
    counts = {}
    for task in stored_column(dataset, "task"):
        counts[task] = counts.get(task, 0) + 1
    return counts


def test_argument_errors(layout, tmp_path):
    root, _ = layout
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        load_fmc_uia(root, on_error="ignore")
    with pytest.raises(FileNotFoundError, match="is not an FMC_UIA layout"):
        load_fmc_uia(str(tmp_path))


# ------------------------------------------------------------------------------------------------------
# datasets folders


def test_hf_folder_round_trip_and_dispatch(layout, tmp_path):
    root, expected = layout
    loaded = load_fmc_uia(root)
    saved = datasets.DatasetDict({name: to_hf_dataset(loaded[name]) for name in loaded})
    folder = str(tmp_path / "saved")
    saved.save_to_disk(folder)
    before = snapshot(folder)
    again = load_hf_folder(folder, num_workers=2)
    assert isinstance(again, datasets.DatasetDict) and set(again) == {"train", "val"}
    examples = _all_examples(again)
    assert set(examples) == set(expected)
    for source, (split, example) in examples.items():
        assert split == _all_examples(loaded)[source][0]
        _assert_example(example, expected[source])
    report = load_report(again["val"])
    assert report["loader"] == "hf_folder" and report["num_skipped"] == 0
    # load_data picks the reader from the folder's contents.
    assert stored_column(load_data(folder, split="val"), "source") == stored_column(again["val"], "source")
    assert stored_column(load_data(root, split="val", seed=0), "source") == stored_column(loaded["val"], "source")
    only = load_hf_folder(folder, split="validation", tasks=["IUGC"])
    assert isinstance(only, datasets.Dataset) and set(stored_column(only, "task")) == {"IUGC"}
    # A folder holding one Dataset.
    single = str(tmp_path / "single")
    saved["val"].save_to_disk(single)
    assert stored_column(load_data(single)["train"], "source") == stored_column(again["val"], "source")
    assert snapshot(folder) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="expected a challenge layout .* or a datasets folder written by save_to_disk"):
        load_data(str(empty))


HF_BAD_CASES = {
    "unknown task": ("task", "breast_9cls", "task", "unknown task 'breast_9cls'; valid task ids: FUGC"),
    "label out of range": ("label", 3, "label", "class 3 out of range for task 'breast_3cls'"),
    "label missing": ("label", None, "label", "empty, but task 'breast_3cls' (classification) needs it"),
    "box outside": ("boxes", [[1.0, 2.0, 99.0, 10.0]], "boxes", "lies outside the"),
    "box empty": ("boxes", [[5.0, 2.0, 5.0, 10.0]], "boxes", "x_max 5.0 <= x_min 5.0"),
    "class label count": ("class_labels", [0, 0], "class_labels", "2 class labels for 1 boxes"),
    "points count": ("points", [[1.0, 2.0]], "points", "1 points, but task 'IUGC' has 3"),
    "mask too many classes": ("mask", "class5", "mask", "mask value 5 >= num_classes"),
    "wrong field filled": ("label", 1, "label", "must be empty for a segmentation task"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HF_BAD_CASES))
def test_hf_folder_bad_row_names_row_and_field(layout, tmp_path, case):
    root, _ = layout
    column, value, field, fragment = HF_BAD_CASES[case]
    data = to_hf_dataset(load_fmc_uia(root, split="val"))
    tasks = stored_column(data, "task")
    wanted_task = {"label": "breast_3cls", "boxes": "thyroid_nodule_det", "class_labels": "thyroid_nodule_det",
                   "points": "IUGC", "mask": "cardiac_multi", "task": "breast_3cls"}[column]  # fmt: skip
    if case == "wrong field filled":
        wanted_task = "cardiac_multi"
    index = tasks.index(wanted_task)
    if value == "class5":
        size = data[index]["mask"].size
        value = Image.fromarray(np.full(size[::-1], 5, dtype=np.uint8))

    def change(example, i):
        if i == index:
            example[column] = value
        return example

    data.map(change, with_indices=True, features=data.features).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(HFFolderDataError) as caught:
        load_hf_folder(str(tmp_path / "bad"))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'bad'} [split 'train'], row {index}, field '{field}': "), message
    assert isinstance(caught.value, DataError)  # one class to catch, whichever reader
    assert (caught.value.split, caught.value.row, caught.value.field) == ("train", index, field)
    assert fragment in message, message
    skipped = load_hf_folder(str(tmp_path / "bad"), on_error="skip", split="train")
    assert len(skipped) == len(data) - 1
    assert json.loads(skipped.info.description)["skipped"] == {"train": {data[index]["task"] if column != "task" else value: 1}}
