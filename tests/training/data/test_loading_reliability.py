"""What the challenge-layout reader refuses or repairs beyond one row's cells: images that do not decode in
full, CSV files that are not UTF-8 or hold no rows, rows listed twice, and images in two splits."""

import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from fixtures import small_layout, write_csv
from m2dino_training.data.fmc_uia import FMCUIADataError, format_load_report, load_fmc_uia, load_report, stored_column


def _layout(root):
    """_small_layout's four rows (one per task type) in csv_files/index.csv; returns (csv path, rows)."""
    rows = small_layout(root)
    # distinct pixels per task image, so that only the duplicates a test writes are duplicates
    for value, relative in enumerate(("Detection/a.png", "Regression/a.png"), start=1):
        Image.fromarray(np.full((20, 30), value, dtype=np.uint8)).save(os.path.join(root, relative))
    path = os.path.join(root, "csv_files", "index.csv")
    write_csv(path, rows)
    return path, rows


def _png_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def _noise_png(path, seed=0, size=(40, 50)):
    image = np.random.default_rng(seed).integers(0, 256, size=size + (3,), dtype=np.uint8)
    Image.fromarray(image).save(path)


# ------------------------------------------------------------------------------------------------------
# Every image decodes in full while loading


@pytest.mark.parametrize("damage", ["truncated png", "corrupt png data", "truncated jpeg"])
def test_image_that_does_not_decode_is_a_row_problem(tmp_path, damage):
    root = str(tmp_path)
    csv_path, rows = _layout(root)
    name = "a.jpg" if "jpeg" in damage else "a.png"
    image = os.path.join(root, "Classification", name)
    _noise_png(image)
    data = _png_bytes(image)
    if damage == "corrupt png data":
        data = data[:200] + bytes(300) + data[500:]  # header and size intact, pixel data broken
    else:
        data = data[: len(data) // 2]
    with open(image, "wb") as handle:
        handle.write(data)
    with Image.open(image) as opened:
        assert opened.size == (50, 40)  # the header alone reads fine
    rows[1]["image_path"] = f"../Classification/{name}"
    write_csv(csv_path, rows)

    with pytest.raises(FMCUIADataError) as caught:
        load_fmc_uia(root, num_workers=2)
    assert str(caught.value).startswith(f"{csv_path}, line 3, field 'image_path': cannot decode image {image}: ")
    assert (caught.value.line, caught.value.field) == (3, "image_path")
    # on_error="skip" catches it like any other row problem, and the rest loads.
    loaded = load_fmc_uia(root, on_error="skip", val_fraction=0, num_workers=2)
    assert sorted(stored_column(loaded["train"], "task")) == ["IUGC", "cardiac_multi", "thyroid_nodule_det"]
    assert load_report(loaded["train"])["skipped"]["train"] == {"breast_3cls": 1}
    assert [example["task"] for example in loaded["train"]]  # and everything kept decodes


def test_loading_report_prints_the_cost_of_the_full_decode(tmp_path, caplog):
    root = str(tmp_path)
    _layout(root)
    with caplog.at_level(logging.INFO, logger="m2dino_training.data.fmc_uia"):
        loaded = load_fmc_uia(root, val_fraction=0, num_workers=2)
    check = load_report(loaded["train"])["check"]
    assert check["rows"] == 4 and check["images_decoded"] == 4 and check["workers"] == 2
    assert check["decode_seconds"] > 0 and check["wall_seconds"] > 0
    text = format_load_report(load_report(loaded["train"]))
    assert "train 4 rows" in text and "full image decode" in text and "ms per image" in text
    assert "full image decode" in caplog.text


def test_an_image_changed_after_loading_names_its_file_and_row(tmp_path):
    root = str(tmp_path)
    _layout(root)
    loaded = load_fmc_uia(root, val_fraction=0, split="train")
    index = stored_column(loaded, "task").index("breast_3cls")
    image = os.path.join(root, "Classification", "a.png")
    with open(image, "r+b") as handle:
        handle.truncate(os.path.getsize(image) // 2)
    with pytest.raises(OSError, match=rf"cannot decode image {image} \(CSV row csv_files/index.csv:3\)"):
        loaded[index]


# ------------------------------------------------------------------------------------------------------
# CSV files


def _rewrite(path, transform):
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(transform(data))


def test_csv_that_is_not_utf8_names_file_line_and_column(tmp_path):
    root = str(tmp_path)
    csv_path, rows = _layout(root)
    os.rename(os.path.join(root, "Classification/a.png"), os.path.join(root, "Classification/é.png"))
    rows[1]["image_path"] = "../Classification/é.png"
    write_csv(csv_path, rows)
    _rewrite(csv_path, lambda data: data.decode("utf-8").encode("cp1252"))  # a spreadsheet's "CSV" export
    with pytest.raises(FMCUIADataError) as caught:
        load_fmc_uia(root)
    assert str(caught.value).startswith(f"{csv_path}, line 3, field 'image_path': is not UTF-8 text: byte 0xe9")
    assert "on_error" not in str(caught.value)  # a whole file is unreadable: skipping rows cannot help
    _rewrite(csv_path, lambda data: data.decode("cp1252").encode("utf-16"))
    with pytest.raises(FMCUIADataError, match=f"^{csv_path}: is UTF-16 text"):
        load_fmc_uia(root)
    # UTF-8 with a byte-order mark (Excel's "CSV UTF-8") is read, the first column keeping its name.
    _rewrite(csv_path, lambda data: data.decode("utf-16").encode("utf-8-sig"))
    loaded = load_fmc_uia(root, val_fraction=0, split="train")
    assert len(loaded) == 4 and any(path.endswith("é.png") for path in stored_column(loaded, "image_path"))


@pytest.mark.parametrize("content, problem", [("", "is empty (no header, no rows)"),
                                              ("image_path,task_id,mask\r\n\r\n", "has a header but no rows")])
def test_empty_and_header_only_csv_are_errors_or_counted_warnings(tmp_path, caplog, content, problem):
    root = str(tmp_path)
    _layout(root)
    empty = os.path.join(root, "csv_files", "more.csv")
    with open(empty, "w", encoding="utf-8", newline="") as handle:
        handle.write(content)
    with pytest.raises(FMCUIADataError) as caught:
        load_fmc_uia(root)
    assert str(caught.value).startswith(f"{empty}: {problem}")
    with caplog.at_level(logging.WARNING):
        loaded = load_fmc_uia(root, on_error="skip", val_fraction=0)
    assert f"skipped CSV file {empty}: it {problem}" in caplog.text
    report = load_report(loaded["train"])
    assert report["skipped_csv_files"] == ["csv_files/more.csv"] and len(loaded["train"]) == 4
    assert "skipped CSV file(s) without rows: csv_files/more.csv" in format_load_report(report)


# ------------------------------------------------------------------------------------------------------
# Rows listed twice, images in two splits


def test_identical_duplicate_rows_are_counted_and_dropped(tmp_path, caplog):
    root = str(tmp_path)
    csv_path, rows = _layout(root)
    clean = load_fmc_uia(root, val_fraction=0, split="train")
    # The same row again in another file, with the class written "2.0" and the image under a second name:
    # the same image (identical pixels) with the same labels.
    shutil.copy(os.path.join(root, "Classification/a.png"), os.path.join(root, "Classification/copy.png"))
    again = [dict(rows[1], mask="2.0", image_path="../Classification/copy.png"), rows[3]]
    write_csv(os.path.join(root, "csv_files", "zz.csv"), again)
    with caplog.at_level(logging.WARNING):
        loaded = load_fmc_uia(root, val_fraction=0, split="train")
    assert stored_column(loaded, "source") == stored_column(clean, "source")  # the first listing is kept
    report = load_report(loaded)
    assert report["duplicates_dropped"] == {"train": {"IUGC": 1, "breast_3cls": 1}}
    zz = os.path.join(root, "csv_files", "zz.csv")
    assert report["duplicate_rows"] == [f"{zz}, line 2 repeats {csv_path}, line 3 (task 'breast_3cls', same image and labels)",
                                        f"{zz}, line 3 repeats {csv_path}, line 5 (task 'IUGC', same image and labels)"]
    assert "dropped 2 duplicate row(s)" in caplog.text
    # The same image in another task is no duplicate (one image can carry labels of several tasks).
    write_csv(os.path.join(root, "csv_files", "zz.csv"), [dict(rows[1], task_id="breast_2cls", mask="1")])
    assert len(load_fmc_uia(root, val_fraction=0, split="train")) == 5


CONFLICTS = {
    "class": (1, {"mask": "0"}, "mask", "class 2 here, class 0 there"),
    "box": (2, {"y_min": "3"}, "y_min", "box [1.0, 3.0, 29.0, 19.5]"),
    "point": (3, {"point_2_xy": "[3, 4]"}, "point_2_xy", "points"),
}


@pytest.mark.parametrize("case", sorted(CONFLICTS))
def test_same_image_with_other_labels_is_an_error_naming_both_lines(tmp_path, case):
    root = str(tmp_path)
    csv_path, rows = _layout(root)
    index, change, field, fragment = CONFLICTS[case]
    write_csv(csv_path, rows + [dict(rows[index], **change)])
    with pytest.raises(FMCUIADataError) as caught:
        load_fmc_uia(root, val_fraction=0)
    message = str(caught.value)
    first_line, last_line = index + 2, len(rows) + 2
    assert message.startswith(f"{csv_path}, line {first_line}, field '{field}': the same image (identical pixels)"), message
    assert f"at {csv_path}, line {last_line} with other labels" in message and fragment in message
    assert caught.value.more == 1  # the second listing is a problem too
    # Skipping drops both listings: which label is right is unknowable.
    loaded = load_fmc_uia(root, val_fraction=0, on_error="skip", split="train")
    assert len(loaded) == 3 and load_report(loaded)["num_skipped"] == 2


def test_conflicting_segmentation_masks(tmp_path):
    root = str(tmp_path)
    csv_path, rows = _layout(root)
    other = np.zeros((20, 30), dtype=np.uint8)
    Image.fromarray(other).save(os.path.join(root, "Segmentation/Four/other.png"))
    shutil.copy(os.path.join(root, "Segmentation/Four/mask.png"), os.path.join(root, "Segmentation/Four/same.png"))
    write_csv(csv_path, rows + [dict(rows[0], mask_path="../Segmentation/Four/same.png")])
    assert len(load_fmc_uia(root, val_fraction=0, split="train")) == 4  # the same class map under two names
    write_csv(csv_path, rows + [dict(rows[0], mask_path="../Segmentation/Four/other.png")])
    with pytest.raises(FMCUIADataError, match=f"line 2, field 'mask_path': .*at {csv_path}, line 6 with other labels"):
        load_fmc_uia(root, val_fraction=0)


def test_an_image_in_two_split_folders_is_an_error_naming_both_rows(tmp_path):
    for split in ("train", "val"):
        _layout(str(tmp_path / split))
        for seed, image in enumerate(("Segmentation/Four/img.png", "Classification/a.png", "Detection/a.png", "Regression/a.png")):
            _noise_png(str(tmp_path / split / image), seed=seed + (split == "val") * 10, size=(20, 30))
    # a copy of a training image in the validation folder
    shutil.copy(tmp_path / "train" / "Classification" / "a.png", tmp_path / "val" / "Classification" / "a.png")
    train_csv, val_csv = (str(tmp_path / split / "csv_files" / "index.csv") for split in ("train", "val"))
    with pytest.raises(FMCUIADataError) as caught:
        load_fmc_uia(str(tmp_path))
    message = str(caught.value)
    assert message.startswith(f"{train_csv}, line 3, field 'image_path': the same image (identical pixels) is in split "
                              f"'train' here and in split 'val' at {val_csv}, line 3"), message
    assert caught.value.more == 1
    # A split asked for on its own is checked on its own; skipping drops the image from both splits.
    assert len(load_fmc_uia(str(tmp_path), split="val")) == 4
    loaded = load_fmc_uia(str(tmp_path), on_error="skip")
    assert [len(loaded["train"]), len(loaded["val"])] == [3, 3]
    assert "breast_3cls" not in stored_column(loaded["train"], "task") + stored_column(loaded["val"], "task")


def test_rows_of_tasks_not_selected_are_not_checked(tmp_path):
    root = str(tmp_path)
    csv_path, rows = _layout(root)
    with open(os.path.join(root, "Classification/a.png"), "r+b") as handle:
        handle.truncate(60)
    conflicting = dict(rows[3], point_1_xy="[2, 2]")
    write_csv(csv_path, rows + [conflicting])
    with pytest.raises(FMCUIADataError):
        load_fmc_uia(root, val_fraction=0)
    loaded = load_fmc_uia(root, val_fraction=0, tasks=["cardiac_multi", "thyroid_nodule_det"], split="train")
    assert sorted(stored_column(loaded, "task")) == ["cardiac_multi", "thyroid_nodule_det"]


def test_datasets_folder_image_that_does_not_decode_is_a_row_problem(tmp_path):
    import datasets

    from m2dino_training.data.hf_folder import HFFolderDataError, load_hf_folder

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    _noise_png(str(good), seed=1)
    _noise_png(str(bad), seed=2)
    data = _png_bytes(bad)
    features = datasets.Features({"image": datasets.Image(), "task": datasets.Value("string"), "label": datasets.Value("int64")})
    rows = {"image": [{"bytes": _png_bytes(good), "path": None}, {"bytes": data[: len(data) // 2], "path": None}],
            "task": ["breast_3cls", "breast_3cls"], "label": [0, 1]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "folder"))
    with pytest.raises(HFFolderDataError, match=r"\[split 'train'\], row 1, field 'image': cannot read image: image file is truncated"):
        load_hf_folder(str(tmp_path / "folder"))
    loaded = load_hf_folder(str(tmp_path / "folder"), on_error="skip", split="train")
    assert len(loaded) == 1 and load_report(loaded)["check"]["rows"] == 2
    assert "every image decoded in full" in format_load_report(load_report(loaded))


def test_datasets_folder_repeated_images(tmp_path):
    import datasets

    from m2dino_training.data.hf_folder import HFFolderDataError, load_hf_folder

    def png(seed):
        path = tmp_path / f"{seed}.png"
        _noise_png(str(path), seed=seed)
        return {"bytes": _png_bytes(path), "path": None}

    features = datasets.Features({"image": datasets.Image(), "task": datasets.Value("string"), "label": datasets.Value("int64")})

    def save(train_rows, val_rows):
        parts = {name: datasets.Dataset.from_dict({"image": [png(seed) for seed, _ in rows], "task": ["lung_2cls"] * len(rows),
                                                   "label": [label for _, label in rows]}, features=features)
                 for name, rows in (("train", train_rows), ("validation", val_rows))}
        folder = tmp_path / f"folder{len(list(tmp_path.glob('folder*')))}"
        datasets.DatasetDict(parts).save_to_disk(str(folder))
        return str(folder)

    # the same image with the same label twice: the second listing dropped and counted
    folder = save([(1, 0), (2, 1), (1, 0)], [(3, 1)])
    loaded = load_hf_folder(folder)
    assert len(loaded["train"]) == 2 and load_report(loaded["train"])["duplicates_dropped"]["train"] == {"lung_2cls": 1}
    # with another label: an error naming both rows
    folder = save([(1, 0), (2, 1), (1, 1)], [(3, 1)])
    with pytest.raises(HFFolderDataError, match=r"\[split 'train'\], row 0, field 'label': the same image .* at row 2 with other labels"):
        load_hf_folder(folder)
    # in two splits: an error naming both rows; skipping drops it from both
    folder = save([(1, 0), (2, 1)], [(3, 1), (2, 1)])
    with pytest.raises(HFFolderDataError, match=r"\[split 'train'\], row 1, field 'image': the same image \(identical pixels\) "
                                                r"is in split 'train' here and in split 'validation' at row 1"):
        load_hf_folder(folder)
    loaded = load_hf_folder(folder, on_error="skip")
    assert [len(loaded["train"]), len(loaded["validation"])] == [1, 1]
