"""The FMC_UIA challenge's submission format and scoring: m2dino-predict, m2dino-score, m2dino-evaluate agree.

A tiny random model on challenge-layout folders written by `fixtures.py`; the scorer is checked against
independent few-line computations of the organisers' rules on hand-made cases.
"""

import csv
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist

import modeling_m2dino as m2dino
from m2dino_training import evaluate, predict, score
from m2dino_training.data.fmc_uia import FMCUIADataError
from m2dino_training.metrics import load_challenge_metric, task_metrics
from m2dino_training.task_types import TRAINING_TASK_TYPES
from conftest import tiny_config
from fixtures import to_hf_dataset, write_challenge_layout, write_csv

LAYOUT_TASKS = ["cardiac_multi", "cervix", "breast_3cls", "thyroid_nodule_det", "IUGC"]
SPECS = {t.id: t for t in m2dino.FMC_UIA_TASKS}


def save_tiny_model(path, task_ids, seed=0):
    torch.manual_seed(seed)
    config = tiny_config(tasks=[SPECS[t].to_dict() for t in task_ids], default_task=task_ids[0])
    m2dino.M2DinoForMultiTask(config).save_pretrained(path)
    m2dino.M2DinoImageProcessor.from_config(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def layout_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "m2dino", LAYOUT_TASKS)


@pytest.fixture(scope="module")
def split_layout(tmp_path_factory):
    """train/ and val/ folders, each a challenge layout (so the whole val folder is the evaluated split)."""
    root = tmp_path_factory.mktemp("layout")
    write_challenge_layout(str(root / "train"), seed=1, with_dicom=False)
    write_challenge_layout(str(root / "val"), seed=2, with_dicom=True)
    return root


def test_predict_then_score_gives_exactly_what_evaluate_reports(layout_model, split_layout, tmp_path):
    results = evaluate.main(["--model", layout_model, "--data", str(split_layout), "--split", "val"])
    out = tmp_path / "submission"
    predict.main(["--model", layout_model, "--data", str(split_layout), "--split", "val", "--out", str(out)])
    scores = score.main(["--data", str(split_layout / "val"), "--predictions", str(out), "--output", str(tmp_path / "s.json")])

    scored = {task_id: result for kind in TRAINING_TASK_TYPES for task_id, result in scores.get(kind, {}).items()}
    assert set(scored) == set(results["tasks"]) == set(LAYOUT_TASKS)
    assert scores["num_problems"] == 0 and not any(scores["left_out"].values()), scores["problems"]
    for task_id, result in scored.items():
        evaluated = results["tasks"][task_id]
        assert result["num_samples"] == evaluated["n_eval"] > 0
        flat = score.flat_task_result(result)
        assert set(TRAINING_TASK_TYPES[evaluated["type"]].challenge_figures) <= set(flat)
        for name, value in flat.items():
            assert value == pytest.approx(evaluated["metrics"][name], abs=1e-6), (task_id, name)
    # the challenge's summary: each figure averaged over the tasks of a type
    assert scores["summary"]["segmentation"]["DSC"] == pytest.approx(
        np.mean([results["tasks"][t]["metrics"]["DSC"] for t in ("cardiac_multi", "cervix")]), abs=1e-9)
    assert json.loads((tmp_path / "s.json").read_text())["summary"] == scores["summary"]


def test_submission_files_are_in_the_organisers_format(layout_model, split_layout, tmp_path):
    out = tmp_path / "submission"
    predict.main(["--model", layout_model, "--data", str(split_layout), "--split", "val", "--out", str(out)])
    rows = [row for name in sorted(os.listdir(split_layout / "val" / "csv_files"))
            for row in csv.DictReader(open(split_layout / "val" / "csv_files" / name, newline="", encoding="utf-8"))]
    fields = {"classification": {"predicted_class", "predicted_probs"}, "detection": {"bbox_pixels"},
              "regression": {"predicted_points_pixels"}}
    for kind, name in predict.PREDICTION_FILES.items():
        records = json.loads((out / name).read_text())
        assert isinstance(records, list)
        expected = {(r["task_id"], r["image_path"]) for r in rows if SPECS[r["task_id"]].type == kind}
        assert {(r["task_id"], r["image_path"]) for r in records} == expected  # CSV strings verbatim, "../" included
        for record in records:
            assert fields[kind] | {"image_path", "task_id"} <= set(record)
            spec = SPECS[record["task_id"]]
            if kind == "classification":
                assert len(record["predicted_probs"]) == spec.num_classes
                assert record["predicted_class"] == int(np.argmax(record["predicted_probs"]))
            if kind == "regression":
                assert len(record["predicted_points_pixels"]) == 2 * spec.num_points
            if kind == "detection":
                assert len(record["bbox_pixels"]) == 4
    for row in rows:
        if SPECS[row["task_id"]].type == "segmentation":
            assert row["mask_path"].startswith("../")
            with Image.open(out / row["mask_path"].replace("../", "")) as mask:
                with Image.open(split_layout / "val" / "csv_files" / row["image_path"]) as image:
                    assert mask.mode == "L" and mask.size == image.size


# ------------------------------------------------------------------------------------------------------
# Hand-made cases against independent computations of the organisers' rules


def independent_dsc_hd(pred, ref, num_classes):
    """Per class (background included): DSC and the full Hausdorff distance, by brute force."""
    dsc, hd = [], []
    diagonal = math.sqrt(pred.shape[0] ** 2 + pred.shape[1] ** 2)
    for c in range(num_classes):
        p, r = np.argwhere(pred == c), np.argwhere(ref == c)
        both = len(p) + len(r)
        dsc.append(1.0 if both == 0 else 2 * np.sum((pred == c) & (ref == c)) / both)
        if len(p) == 0 and len(r) == 0:
            hd.append(0.0)
        elif len(p) == 0 or len(r) == 0:
            hd.append(diagonal)
        else:
            d = cdist(p, r)
            hd.append(max(d.min(1).max(), d.min(0).max()))
    return np.array(dsc), np.array(hd)


def independent_auc(labels, scores):
    """One-vs-rest AUC by counting pairs (a tie counts 1/2)."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    pairs = (positives[:, None] > negatives[None]).sum() + 0.5 * (positives[:, None] == negatives[None]).sum()
    return pairs / (len(positives) * len(negatives))


def independent_f1(labels, predicted, classes):
    f1 = []
    for c in classes:
        tp = np.sum((predicted == c) & (labels == c))
        denominator = np.sum(predicted == c) + np.sum(labels == c)
        f1.append(2 * tp / denominator if denominator else 0.0)
    return np.array(f1)


def independent_mcc(labels, predicted, num_classes):
    confusion = np.zeros((num_classes, num_classes))
    for t, p in zip(labels, predicted):
        confusion[t, p] += 1
    s, c = confusion.sum(), np.trace(confusion)
    t, p = confusion.sum(1), confusion.sum(0)
    denominator = math.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    return 0.0 if denominator == 0 else (c * s - t @ p) / denominator


def write_mask(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


@pytest.fixture
def hand_made(tmp_path):
    """Ground truth (csv_files + masks) and a submission, with the arrays they hold."""
    data, out = tmp_path / "data", tmp_path / "out"
    rng = np.random.default_rng(0)
    rows, case = [], {}
    # cervix_multi (3 classes). Image 0: class 2 absent from both masks, class 1 only in the ground truth.
    # Image 1: an empty prediction against a ground truth holding both foreground classes.
    ref0 = np.zeros((9, 12), np.uint8); ref0[2:5, 3:8] = 1
    pred0 = np.zeros((9, 12), np.uint8); pred0[6:8, 1:3] = 0
    ref1 = np.zeros((10, 7), np.uint8); ref1[1:4, 1:3] = 1; ref1[6:9, 2:6] = 2
    pred1 = np.zeros((10, 7), np.uint8)
    # Image 2: overlapping blobs, every class present in both.
    ref2 = rng.integers(0, 3, (8, 8)).astype(np.uint8)
    pred2 = ref2.copy(); pred2[:3] = rng.integers(0, 3, (3, 8))
    case["segmentation"] = [(pred0, ref0), (pred1, ref1), (pred2, ref2)]
    for i, (pred, ref) in enumerate(case["segmentation"]):
        write_mask(data / f"Segmentation/Three/cervix_multi/m{i}.png", ref)
        write_mask(out / f"Segmentation/Three/cervix_multi/m{i}.png", pred)
        rows.append({"image_path": f"../Segmentation/Three/cervix_multi/i{i}.png", "task_id": "cervix_multi",
                     "task_name": "segmentation", "mask_path": f"../Segmentation/Three/cervix_multi/m{i}.png",
                     "num_classes": "3"})
    # breast_2cls: every row holds class 1 (AUC cannot be computed: 0.0)
    binary = [(1, [0.3, 0.7]), (1, [0.8, 0.2]), (1, [0.4, 0.6])]
    # breast_3cls: a multi-class AUC
    multi = [(0, [0.7, 0.2, 0.1]), (1, [0.2, 0.5, 0.3]), (2, [0.1, 0.3, 0.6]), (1, [0.5, 0.4, 0.1]),
             (2, [0.3, 0.3, 0.4]), (0, [0.2, 0.2, 0.6])]
    case["breast_2cls"], case["breast_3cls"], records = binary, multi, []
    for task, cases in (("breast_2cls", binary), ("breast_3cls", multi)):
        for i, (label, probs) in enumerate(cases):
            image_path = f"../Classification/{task}/{i}.png"
            rows.append({"image_path": image_path, "task_id": task, "task_name": "classification", "mask": str(label),
                         "num_classes": str(len(probs))})
            records.append({"image_path": image_path, "task_id": task, "predicted_class": int(np.argmax(probs)),
                            "predicted_probs": probs})
    json.dump(records, open(tmp_path / "cls.json", "w"))
    boxes = [([2.0, 3.0, 10.0, 9.0], [4.0, 3.0, 12.0, 11.0]), ([0.0, 0.0, 5.0, 5.0], [6.0, 6.0, 9.0, 9.0])]
    case["detection"] = boxes
    for i, (pred, ref) in enumerate(boxes):
        rows.append({"image_path": f"../Detection/t/{i}.png", "task_id": "thyroid_nodule_det", "task_name": "detection",
                     "x_min": ref[0], "y_min": ref[1], "x_max": ref[2], "y_max": ref[3], "num_classes": "1"})
    points = [([1.0, 2.0, 5.0, 5.0, 9.0, 1.0], [[1.0, 1.0], [2.0, 5.0], [9.5, 1.5]]),
              ([3.0, 4.0, 0.0, 0.0, 7.0, 7.0], [[0.0, 0.0], None, [4.0, 3.0]])]  # a missing GT point counts as (0, 0)
    case["regression"] = points
    for i, (pred, ref) in enumerate(points):
        row = {"image_path": f"../Regression/IUGC/{i}.png", "task_id": "IUGC", "task_name": "Regression", "num_classes": "3"}
        row.update({f"point_{k + 1}_xy": json.dumps(p) for k, p in enumerate(ref) if p is not None})
        rows.append(row)
    os.makedirs(data / "csv_files")
    write_csv(str(data / "csv_files" / "all.csv"), rows, columns=list(dict.fromkeys(k for r in rows for k in r)))
    write_submission_files(out, records,
                           [{"image_path": f"../Detection/t/{i}.png", "task_id": "thyroid_nodule_det", "bbox_pixels": p}
                            for i, (p, _) in enumerate(boxes)],
                           [{"image_path": f"../Regression/IUGC/{i}.png", "task_id": "IUGC", "predicted_points_pixels": p}
                            for i, (p, _) in enumerate(points)])
    return data, out, case


def write_submission_files(out, classification, detection, regression):
    os.makedirs(out, exist_ok=True)
    for name, records in zip(predict.PREDICTION_FILES.values(), (classification, detection, regression)):
        with open(os.path.join(out, name), "w") as f:
            json.dump(records, f)


def test_scores_equal_independent_computations_on_hand_made_cases(hand_made):
    data, out, case = hand_made
    scores = score.score_submission(str(data), str(out))
    assert scores["num_problems"] == 0, scores["problems"]

    per_image = [independent_dsc_hd(p.astype(int), r.astype(int), 3) for p, r in case["segmentation"]]
    dsc = np.mean([d for d, _ in per_image], 0)
    hd = np.mean([h for _, h in per_image], 0)
    assert per_image[0][0][2] == 1.0 and per_image[0][1][2] == 0.0  # class absent from both masks
    assert per_image[0][0][1] == 0.0 and per_image[0][1][1] == pytest.approx(math.hypot(9, 12))  # present in one
    result = scores["segmentation"]["cervix_multi"]
    assert result["DSC"] == pytest.approx(dsc[1:].mean(), abs=1e-9)
    assert result["HD"] == pytest.approx(hd[1:].mean(), abs=1e-9)
    for c in range(3):
        assert result["per_class"][f"class_{c}"] == pytest.approx({"DSC": dsc[c], "HD": hd[c]}, abs=1e-9)
    assert result["num_samples"] == 3

    for task, num_classes in (("breast_2cls", 2), ("breast_3cls", 3)):
        labels = np.array([label for label, _ in case[task]])
        probs = np.array([p for _, p in case[task]])
        predicted = probs.argmax(1)
        present = sorted(set(labels) | set(predicted))
        f1 = independent_f1(labels, predicted, range(num_classes))
        result = scores["classification"][task]
        assert result["Accuracy"] == pytest.approx(np.mean(labels == predicted))
        assert result["F1_macro"] == pytest.approx(independent_f1(labels, predicted, present).mean())
        assert result["F1_weighted"] == pytest.approx(np.sum(f1 * np.bincount(labels, minlength=num_classes)) / len(labels))
        assert result["MCC"] == pytest.approx(independent_mcc(labels, predicted, num_classes))
        if task == "breast_2cls":
            assert result["AUC"] == 0.0  # one class in the rows: the challenge's AUC cannot be computed
        else:
            expected = np.mean([independent_auc((labels == c).astype(int), probs[:, c]) for c in range(3)])
            assert result["AUC"] == pytest.approx(expected)

    ious = []
    for pred, ref in case["detection"]:
        inter = max(0, min(pred[2], ref[2]) - max(pred[0], ref[0])) * max(0, min(pred[3], ref[3]) - max(pred[1], ref[1]))
        union = (pred[2] - pred[0]) * (pred[3] - pred[1]) + (ref[2] - ref[0]) * (ref[3] - ref[1]) - inter
        ious.append(inter / union)
    assert ious[1] == 0.0 and scores["detection"]["thyroid_nodule_det"]["IoU"] == pytest.approx(np.mean(ious))

    errors = []
    for pred, ref in case["regression"]:
        ref = [p if p is not None else [0.0, 0.0] for p in ref]
        errors.append(np.mean([math.dist(pred[2 * k : 2 * k + 2], ref[k]) for k in range(3)]))
    assert scores["regression"]["IUGC"]["MRE"] == pytest.approx(np.mean(errors))
    assert scores["summary"]["classification"]["num_tasks"] == 2


def test_bad_submissions_are_named_and_the_rest_is_scored(hand_made, tmp_path):
    data, out, case = hand_made
    records = json.loads((out / predict.PREDICTION_FILES["classification"]).read_text())
    del records[1]["predicted_class"]  # a record missing a required field
    records.append({"image_path": "../Classification/breast_3cls/99.png", "task_id": "breast_3cls",
                    "predicted_class": 0, "predicted_probs": [1, 0, 0]})  # an image no row lists
    (out / predict.PREDICTION_FILES["classification"]).write_text(json.dumps(records))
    (out / predict.PREDICTION_FILES["detection"]).write_text(json.dumps({"not": "a list"}))
    write_mask(out / "Segmentation/Three/cervix_multi/m1.png", np.zeros((5, 5)))  # wrong size (resized)
    Image.fromarray(np.full((8, 8), 2, np.uint16)).save(out / "Segmentation/Three/cervix_multi/m2.png")  # 16-bit
    csv_path = data / "csv_files" / "all.csv"
    text = csv_path.read_text().replace(",Regression,", ",regression,", 1)  # task_name spelled otherwise
    csv_path.write_text(text)

    scores = score.score_submission(str(data), str(out))
    problems = "\n".join(scores["problems"])
    assert "classification_predictions.json, record 1: missing field(s) ['predicted_class']" in problems
    assert f"classification_predictions.json, record {len(records) - 1}: task 'breast_3cls' and image " \
           "'../Classification/breast_3cls/99.png' match no CSV row" in problems
    assert "detection_predictions.json: a JSON dict, but the challenge reads a list" in problems
    assert "Segmentation/Three/cervix_multi/m1.png: 5x5 but the ground truth of csv_files/all.csv, line 3 is 7x10" in problems
    assert "Segmentation/Three/cervix_multi/m2.png: a 16-bit mask" in problems
    regression_line = 1 + next(i for i, line in enumerate(text.splitlines()) if ",regression," in line)
    assert f"csv_files/all.csv, line {regression_line}, field 'task_name': 'regression'; the challenge spells it 'Regression'" in problems
    left_out = scores["left_out"]
    assert left_out["records_left_out"] == {"classification_predictions.json": 1}
    assert left_out["records_matching_no_row"] == {"classification_predictions.json": 1}
    assert left_out["rows_without_prediction"] == {"breast_2cls": 1, "thyroid_nodule_det": 2}
    assert left_out["rows_left_out"] == {"IUGC": 1}
    assert left_out["resized_masks"] == {"cervix_multi": 1}
    # what is fine is still scored: two of three binary rows, all segmentation rows, the other regression row
    assert scores["classification"]["breast_2cls"]["num_samples"] == 2
    assert scores["segmentation"]["cervix_multi"]["num_samples"] == 3
    assert scores["regression"]["IUGC"]["num_samples"] == 1
    assert scores["detection"]["thyroid_nodule_det"] == {"IoU": 0.0, "num_samples": 0}
    # the resized empty prediction and the 16-bit mask (read as zeros, as the challenge does) score as empty
    expected = [independent_dsc_hd(p, r.astype(int), 3) for p, r in
                [(case["segmentation"][0][0].astype(int), case["segmentation"][0][1]),
                 (np.zeros((10, 7), int), case["segmentation"][1][1]), (np.zeros((8, 8), int), case["segmentation"][2][1])]]
    assert scores["segmentation"]["cervix_multi"]["DSC"] == pytest.approx(np.mean([d for d, _ in expected], 0)[1:].mean())


# ------------------------------------------------------------------------------------------------------
# Test-time folders


@pytest.fixture(scope="module")
def breast_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("breast") / "m2dino", ["breast_2cls", "breast_3cls", "breast_lesion"])


def write_test_folder(root, corrupt=False):
    """A label-less folder: image_path, task_id, task_name (and mask_path); two tasks share each breast image,
    and rows of tasks the breast model does not serve."""
    rows = []
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 52), (36, 36), (50, 30)]):
        relative = f"Classification/breast/{i}.png"
        os.makedirs(os.path.join(root, os.path.dirname(relative)), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(os.path.join(root, relative))
        for task in ("breast_2cls", "breast_3cls"):
            rows.append({"image_path": f"../{relative}", "task_id": task, "task_name": "classification"})
        rows.append({"image_path": f"../{relative}", "task_id": "breast_lesion", "task_name": "segmentation",
                     "mask_path": f"../Segmentation/Two/breast_lesion/{i}_mask.png"})
    for i in range(2):
        rows.append({"image_path": f"../Classification/breast/{i}.png", "task_id": "lung_2cls", "task_name": "classification"})
    rows.append({"image_path": "../Classification/breast/0.png", "task_id": "thyroid_nodule", "task_name": "segmentation",
                 "mask_path": "../Segmentation/Two/thyroid/0.png"})
    if corrupt:
        with open(os.path.join(root, "Classification/breast/2.png"), "wb") as f:
            f.write(b"not an image")
    os.makedirs(os.path.join(root, "csv_files"))
    write_csv(os.path.join(root, "csv_files", "test.csv"), rows, columns=["image_path", "task_id", "task_name", "mask_path"])
    return rows


def test_label_less_folder_predicts_shared_images_and_reports_other_tasks(breast_model, tmp_path):
    root, out = tmp_path / "test", tmp_path / "out"
    write_test_folder(str(root))
    summary = predict.main(["--model", breast_model, "--data", str(root), "--out", str(out)])
    assert summary["counts"] == {"breast_2cls": 3, "breast_3cls": 3, "breast_lesion": 3}
    assert summary["left_out"] == {"lung_2cls": 2, "thyroid_nodule": 1}
    records = json.loads((out / "classification_predictions.json").read_text())
    by_image = {}
    for record in records:
        by_image.setdefault(record["image_path"], set()).add(record["task_id"])
    assert by_image == {f"../Classification/breast/{i}.png": {"breast_2cls", "breast_3cls"} for i in range(3)}
    for i, size in enumerate([(52, 40), (36, 36), (30, 50)]):
        with Image.open(out / f"Segmentation/Two/breast_lesion/{i}_mask.png") as mask:
            assert mask.mode == "L" and mask.size == size
    assert not (out / "Segmentation/Two/thyroid").exists()

    # The challenge container's entry point runs the same code path and writes the same files.
    class Model(predict.ChallengeModel):
        model_dir = breast_model

    Model(device="cpu").predict(str(root), str(tmp_path / "container"))
    for name in predict.PREDICTION_FILES.values():
        assert json.loads((tmp_path / "container" / name).read_text()) == json.loads((out / name).read_text())
    for i in range(3):
        relative = f"Segmentation/Two/breast_lesion/{i}_mask.png"
        assert np.array_equal(np.asarray(Image.open(tmp_path / "container" / relative)), np.asarray(Image.open(out / relative)))


def test_on_error_skip_predicts_the_readable_rows_and_reports_the_rest(breast_model, tmp_path):
    root = tmp_path / "test"
    write_test_folder(str(root), corrupt=True)
    with pytest.raises(SystemExit, match=r"test.csv, line \d+, field 'image_path': cannot read image"):
        predict.main(["--model", breast_model, "--data", str(root), "--out", str(tmp_path / "a")])
    summary = predict.main(["--model", breast_model, "--data", str(root), "--out", str(tmp_path / "b"), "--on_error", "skip"])
    assert summary["counts"] == {"breast_2cls": 2, "breast_3cls": 2, "breast_lesion": 2}
    assert summary["skipped"] == {"breast_2cls": 1, "breast_3cls": 1, "breast_lesion": 1}


def test_evaluate_reports_tasks_the_model_does_not_serve_and_skips_bad_rows(split_layout, tmp_path, capsys):
    model = save_tiny_model(tmp_path / "m", ["breast_3cls", "IUGC"])
    data = tmp_path / "data"
    shutil.copytree(split_layout, data)
    with open(data / "val" / "Regression" / "IUGC" / "0.png", "wb") as f:
        f.write(b"broken")
    with pytest.raises(FMCUIADataError, match="field 'image_path'"):
        evaluate.main(["--model", model, "--data", str(data), "--split", "val"])
    results = evaluate.main(["--model", model, "--data", str(data), "--split", "val", "--on_error", "skip"])
    assert set(results["tasks"]) == {"breast_3cls", "IUGC"}
    assert results["left_out"] == {"cardiac_multi": 5, "cervix": 5, "thyroid_nodule_det": 5}
    assert results["skipped"] == {"IUGC": 1} and results["tasks"]["IUGC"]["n_eval"] == 4
    printed = capsys.readouterr().out
    assert "left out (tasks the model does not serve or not asked for), rows per task: cardiac_multi 5" in printed
    assert "| breast_3cls | classification | 10 | Accuracy" in printed


def test_the_local_evaluate_module_computes_the_same_figures():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=12)
    labels = np.arange(12) % 3
    metric = load_challenge_metric("classification")
    computed = metric.compute(predictions=probs.tolist(), references=labels.tolist(), num_classes=3)
    expected = task_metrics(SPECS["breast_3cls"], probs, labels)
    assert computed == {k: pytest.approx(v) for k, v in expected.items() if np.ndim(v) == 0}
    masks = [rng.integers(0, 3, (6, 7)) for _ in range(4)]
    refs = [rng.integers(0, 3, (6, 7)) for _ in range(4)]
    computed = load_challenge_metric("segmentation").compute(predictions=masks, references=refs, num_classes=3)
    assert computed["DSC"] == pytest.approx(task_metrics(SPECS["cervix_multi"], masks, refs)["DSC"])


def test_a_datasets_folder_predicts_with_records_keyed_by_source(layout_model, tmp_path):
    import datasets

    from m2dino_training.data.fmc_uia import load_fmc_uia

    write_challenge_layout(str(tmp_path / "layout"), with_dicom=False)
    loaded = load_fmc_uia(str(tmp_path / "layout"))
    datasets.DatasetDict({name: to_hf_dataset(loaded[name]) for name in loaded}).save_to_disk(str(tmp_path / "saved"))
    summary = predict.main(["--model", layout_model, "--data", str(tmp_path / "saved"), "--split", "val",
                            "--out", str(tmp_path / "out")])
    sources = {task: sorted(s for s, t in zip(loaded["val"].with_format(None)["source"], loaded["val"].with_format(None)["task"])
                            if t == task) for task in summary["counts"]}
    assert summary["counts"] == {task: len(found) for task, found in sources.items()}
    for kind, name in predict.PREDICTION_FILES.items():
        for record in json.loads((tmp_path / "out" / name).read_text()):
            assert record["image_path"] in sources[record["task_id"]]
    for task in ("cardiac_multi", "cervix"):
        for source in sources[task]:
            assert (tmp_path / "out" / predict.fallback_mask_path(source)).is_file(), source
