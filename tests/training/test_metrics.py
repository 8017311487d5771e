"""Every metric against values worked out by hand on small fixtures."""

import math

import numpy as np
import pytest

from m2dino_training import metrics as M
from m2dino_training.task_types import TRAINING_TASK_TYPES
from modeling_m2dino.tasks import TaskSpec

# ------------------------------------------------------------------------------------------------
# segmentation
# ------------------------------------------------------------------------------------------------


def test_dice_by_hand_with_empty_class_conventions():
    # Class 1: prediction 4 pixels, reference 6 pixels, 3 shared -> 2*3 / (4+6) = 0.6.
    # Class 2: absent from both in image 0 -> 1.0; image 1 has class 2 only in the reference -> 0.0.
    pred0 = np.zeros((4, 4), int)
    pred0[0, 0:4] = 1
    ref0 = np.zeros((4, 4), int)
    ref0[0, 1:4] = 1
    ref0[1, 1:4] = 1
    pred1 = np.zeros((4, 4), int)
    pred1[2:4, 2:4] = 1  # 4 pixels, identical to the reference -> class 1 Dice 1.0
    ref1 = pred1.copy()
    ref1[0, 0] = 2
    out = M.segmentation_metrics([pred0, pred1], [ref0, ref1], num_classes=3)
    assert out["class_1_DSC"] == pytest.approx((0.6 + 1.0) / 2)
    assert out["class_2_DSC"] == pytest.approx((1.0 + 0.0) / 2)
    assert out["DSC"] == pytest.approx((0.8 + 0.5) / 2)
    np.testing.assert_allclose(out["per_sample_dsc"], [(0.6 + 1.0) / 2, (1.0 + 0.0) / 2])
    # Background: image 0 prediction 12 pixels, reference 10, 9 shared -> 18/22; image 1: 11 vs 11, 11 shared.
    assert out["class_0_DSC"] == pytest.approx((18 / 22 + 22 / 23) / 2)
    # Class 2: absent from both in image 0 (HD 0), missing from the prediction in image 1 (the 4x4 diagonal).
    assert out["class_2_HD"] == pytest.approx((0.0 + math.hypot(4, 4)) / 2)
    # Class 1, image 0: prediction row 0 cols 0-3, reference rows 0-1 cols 1-3; the farthest pixel from the
    # other set is (1, 1)/(1, 3) one row below the prediction, or (0, 0) one column off the reference: 1.
    assert out["class_1_HD"] == pytest.approx((1.0 + 0.0) / 2)


def test_default_class_names_are_indices():
    mask = np.zeros((3, 3), int)
    out = M.segmentation_metrics([mask], [mask], num_classes=3)
    assert {"class_0_DSC", "class_1_DSC", "class_2_DSC", "class_0_HD", "class_1_HD", "class_2_HD"} <= set(out)
    assert out["DSC"] == 1.0 and out["HD"] == 0.0 and out["HD95"] == 0.0 and out["num_samples"] == 1


def _mask(shape, pixels):
    mask = np.zeros(shape, bool)
    for r, c in pixels:
        mask[r, c] = True
    return mask


def test_hd95_known_distances():
    # Single pixels 3 apart along a row, and a 3-4-5 triangle.
    assert M.hd95(_mask((5, 8), [(1, 1)]), _mask((5, 8), [(1, 4)])) == pytest.approx(3.0)
    assert M.hd95(_mask((6, 6), [(0, 0)]), _mask((6, 6), [(3, 4)])) == pytest.approx(5.0)
    # 2x2 squares shifted by 3 columns: directed distances {3, 3, 2, 2} both ways; the 95th
    # percentile of sorted [2, 2, 3, 3] sits at position 2.85 -> 3.0.
    a = np.zeros((6, 8), bool)
    a[1:3, 0:2] = True
    b = np.zeros((6, 8), bool)
    b[1:3, 3:5] = True
    assert M.hd95(a, b) == pytest.approx(3.0)


def test_hd95_is_max_of_directed_percentiles_and_ignores_outliers():
    # A = {(0,0)}, B = {(0,0), (0,10)}: A->B = [0]; B->A = [0, 10] whose 95th percentile is 9.5.
    assert M.hd95(_mask((3, 12), [(0, 0)]), _mask((3, 12), [(0, 0), (0, 10)])) == pytest.approx(9.5)
    # A 20-pixel line and the same line plus one far pixel: the plain Hausdorff distance would be 30,
    # but 1 outlier out of 21 surface points lies above the 95th percentile -> 0.
    line = _mask((20, 40), [(r, 0) for r in range(20)])
    assert M.hd95(line, line | _mask((20, 40), [(0, 30)])) == pytest.approx(0.0)


def test_hd95_empty_masks_and_interior_is_not_surface():
    empty = np.zeros((3, 4), bool)
    assert M.hd95(empty, empty) == 0.0
    assert M.hd95(empty, _mask((3, 4), [(1, 1)])) == pytest.approx(5.0)  # diagonal of 3x4
    # A filled 5x5 square against its own outline: identical surfaces -> 0 (the interior is ignored).
    square = np.zeros((7, 7), bool)
    square[1:6, 1:6] = True
    outline = square.copy()
    outline[2:5, 2:5] = False
    assert M.hd95(square, outline) == 0.0


def test_segmentation_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same"):
        M.segmentation_metrics([np.zeros((4, 4), int)], [np.zeros((4, 5), int)], num_classes=2)


# ------------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------------


def test_binary_auc_with_ties_by_hand():
    # Positives {0.35, 0.8, 0.4}, negatives {0.1, 0.4}. Pairs (pos > neg = 1, tie = 1/2):
    # 0.35: 1 + 0;  0.8: 1 + 1;  0.4: 1 + 1/2  -> 4.5 of 6 pairs.
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = np.array([0, 0, 1, 1, 1])
    probs = np.stack([1 - scores, scores], 1)
    assert M.classification_metrics(probs, labels, 2)["AUC"] == pytest.approx(0.75)
    assert M.classification_metrics(scores, labels, 2)["AUC"] == pytest.approx(0.75)  # 1-D = P(class 1)
    # One class only in the labels: the challenge's AUC is 0.0 (scikit-learn cannot compute it).
    assert M.classification_metrics(probs, np.ones(5, int), 2)["AUC"] == 0.0
    assert M.classification_metrics(None, labels, 2, predicted=np.ones(5, int))["AUC"] == 0.0  # no probabilities


def _pair_count_auc(scores, positive):
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_multiclass_auc_is_macro_one_vs_rest_and_zero_when_a_class_never_occurs():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=30)
    labels = np.arange(30) % 4
    expected = np.mean([_pair_count_auc(probs[:, k], labels == k) for k in range(4)])
    assert M.classification_metrics(probs, labels, 4)["AUC"] == pytest.approx(expected)
    # Class 3 never occurs: scikit-learn's one-vs-rest AUC cannot be computed, the challenge reports 0.0.
    assert M.classification_metrics(probs, labels % 3, 4)["AUC"] == 0.0


def test_f1_mcc_accuracy_on_a_3class_confusion_matrix():
    # rows = truth, columns = prediction
    #            p0 p1 p2   support
    #   t0     [  3, 1, 0 ]   4
    #   t1     [  1, 2, 1 ]   4
    #   t2     [  0, 0, 2 ]   2
    # predicted counts 4, 3, 3; TP 3, 2, 2; FP 1, 1, 1; FN 1, 2, 0.
    # F1_k = 2TP / (2TP + FP + FN): 6/8, 4/7, 4/5.
    # macro = (3/4 + 4/7 + 4/5) / 3 = (297/140) / 3 = 99/140
    # weighted = (4*3/4 + 4*4/7 + 2*4/5) / 10 = (241/35) / 10 = 241/350
    # MCC (Gorodkin): c = 7, s = 10, t = (4,4,2), p = (4,3,3), t.p = 34, p.p = 34, t.t = 36
    #   = (7*10 - 34) / sqrt((100 - 34)(100 - 36)) = 36 / sqrt(66*64) = 4.5 / sqrt(66)
    confusion = np.array([[3, 1, 0], [1, 2, 1], [0, 0, 2]])
    labels, preds = [], []
    for t in range(3):
        for p in range(3):
            labels += [t] * confusion[t, p]
            preds += [p] * confusion[t, p]
    probs = np.eye(3)[preds] * 0.8 + 0.1
    out = M.classification_metrics(probs, np.array(labels), 3)
    np.testing.assert_array_equal(out["confusion_matrix"], confusion)
    assert out["Accuracy"] == pytest.approx(0.7)
    assert out["F1_macro"] == pytest.approx(99 / 140)
    assert out["F1_weighted"] == pytest.approx(241 / 350)
    assert out["class_1_F1"] == pytest.approx(4 / 7)
    assert out["MCC"] == pytest.approx(4.5 / math.sqrt(66))
    # The predicted classes of a submission may differ from the argmax of its probabilities.
    assert M.classification_metrics(probs, np.array(labels), 3, predicted=np.array(labels))["Accuracy"] == 1.0
    np.testing.assert_array_equal(out["per_sample_correct"], (np.array(labels) == np.array(preds)).astype(float))


def test_mcc_undefined_is_zero_and_f1_macro_skips_unseen_classes():
    # Every prediction is class 0: the predicted marginal is constant -> MCC 0.
    labels = np.array([0, 0, 1, 1])
    probs = np.tile([0.9, 0.05, 0.05], (4, 1))
    out = M.classification_metrics(probs, labels, 3)
    assert out["MCC"] == 0.0
    # F1: class 0 = 2*2 / (2 + 4) = 2/3, class 1 = 0, class 2 unseen -> macro over {0, 1} = 1/3.
    assert out["F1_macro"] == pytest.approx(1 / 3)
    assert out["Accuracy"] == 0.5


# ------------------------------------------------------------------------------------------------
# detection
# ------------------------------------------------------------------------------------------------


def test_box_iou_by_hand():
    # Overlap 2x2 = 4, union 16 + 16 - 4 = 28.
    assert M.box_iou([0, 0, 4, 4], [2, 2, 6, 6])[0, 0] == pytest.approx(1 / 7)
    assert M.box_iou([0, 0, 4, 4], [5, 5, 6, 6])[0, 0] == 0.0


def test_detection_iou_and_ap50_on_three_images():
    ref = [np.array([[0, 0, 10, 10]]), np.array([0, 0, 10, 10]), np.array([[20, 20, 30, 30]])]
    boxes = [
        np.array([[1, 1, 9, 9], [0, 0, 10, 10]]),  # exact box (0.9) and a duplicate with IoU 0.64 (0.6)
        np.array([[5, 5, 15, 15]]),  # IoU 25/175 = 1/7 -> a false positive at 0.5
        np.array([[21, 20, 31, 30]]),  # IoU 90/110 = 9/11 -> true positive
    ]
    scores = [np.array([0.6, 0.9]), np.array([0.8]), np.array([0.7])]
    out = M.detection_metrics(boxes, scores, ref)
    # IoU uses each image's top-scoring box: 1, 1/7, 9/11.
    np.testing.assert_allclose(out["per_sample_iou"], [1, 1 / 7, 9 / 11])
    assert out["IoU"] == pytest.approx((1 + 1 / 7 + 9 / 11) / 3)
    # By score: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP (its GT is taken). 3 GT boxes.
    # precision 1, 1/2, 2/3, 1/2; recall 1/3, 1/3, 2/3, 2/3; envelope 1, 2/3, 2/3, 1/2
    # AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
    assert out["AP50"] == pytest.approx(5 / 9)


def test_detection_edge_cases():
    gt = [np.array([0, 0, 2, 2])]
    # No prediction: IoU 0 and AP 0.
    out = M.detection_metrics([np.zeros((0, 4))], [np.zeros(0)], gt)
    assert (out["IoU"], out["AP50"], out["per_sample_iou"].tolist()) == (0.0, 0.0, [0.0])
    # No GT box: nothing predicted earns 1, a box earns 0; AP is undefined without GT.
    out = M.detection_metrics([np.zeros((0, 4)), np.array([[0, 0, 1, 1]])], None, [np.zeros((0, 4))] * 2)
    assert out["per_sample_iou"].tolist() == [1.0, 0.0] and math.isnan(out["AP50"])
    # Two GT boxes: the two top-scoring predictions, best IoU per GT box, averaged; the low-scoring
    # third box would match GT 2 perfectly but is not among the top 2.
    two_gt = [np.array([[0, 0, 2, 2], [10, 10, 12, 12]])]
    preds = [np.array([[0, 0, 2, 2], [10, 10, 12, 13], [10, 10, 12, 12]])]
    out = M.detection_metrics(preds, [np.array([0.9, 0.8, 0.1])], two_gt)
    assert out["IoU"] == pytest.approx((1 + 4 / 6) / 2)
    # The challenge's formula: a degenerate predicted box against a zero-area box has union 0 -> IoU 0.
    assert M.challenge_box_iou([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0


# ------------------------------------------------------------------------------------------------
# regression
# ------------------------------------------------------------------------------------------------


def test_mre_by_hand():
    # Image 0 errors: 0 and |(3, 4)| = 5; image 1 errors: |(0, 3)| = 3 and |(4, 3)| = 5.
    pred = [np.array([[0, 0], [3, 4]]), np.array([[1, 1], [1, 1]])]
    ref = [np.array([[0, 0], [0, 0]]), np.array([[1, 4], [5, 4]])]
    out = M.regression_metrics(pred, ref, point_names=["a", "b"], image_sizes=[(3, 4), (6, 8)])
    assert out["MRE"] == pytest.approx(13 / 4)
    assert out["point_1_MRE"] == pytest.approx(1.5)
    assert out["point_2_MRE"] == pytest.approx(5.0)
    np.testing.assert_allclose(out["per_sample_radial_error"], [2.5, 4.0])
    assert out["NMRE"] == pytest.approx((2.5 / 5 + 4.0 / 10) / 2)


# ------------------------------------------------------------------------------------------------
# dispatch, prefixes, normalised score
# ------------------------------------------------------------------------------------------------


def test_task_metrics_dispatch_and_prefix():
    seg = TaskSpec(id="lesion", type="segmentation", num_classes=2, labels=["background", "lesion"])
    mask = np.zeros((4, 4), int)
    mask[1:3, 1:3] = 1
    out = M.task_metrics(seg, [mask], [mask])
    assert out["class_1_DSC"] == 1.0
    flat = M.metrics_with_prefix("lesion", out)
    assert flat == {"lesion_DSC": 1.0, "lesion_HD": 0.0, "lesion_HD95": 0.0, "lesion_class_0_DSC": 1.0,
                    "lesion_class_0_HD": 0.0, "lesion_class_1_DSC": 1.0, "lesion_class_1_HD": 0.0, "lesion_num_samples": 1.0}
    assert all(type(v) is float for v in flat.values())

    det = TaskSpec(id="nodule", type="detection", num_classes=1)
    preds = [{"boxes": np.array([[0, 0, 4, 4]]), "scores": np.array([1.0])}, (np.array([[0, 0, 4, 4]]), None)]
    out = M.task_metrics(det, preds, [np.array([0, 0, 4, 4]), np.array([2, 2, 6, 6])])
    assert out["IoU"] == pytest.approx((1 + 1 / 7) / 2)

    cls = TaskSpec(id="c", type="classification", num_classes=2)
    assert M.task_metrics(cls, np.array([[0.2, 0.8]]), np.array([1]))["Accuracy"] == 1.0
    reg = TaskSpec(id="r", type="regression", num_points=1, labels=["tip"])
    assert M.task_metrics(reg, [np.array([[0, 0]])], [np.array([[3, 4]])])["point_1_MRE"] == 5.0


def test_normalized_scores():
    challenge_types = ("segmentation", "classification", "detection", "regression")
    primary = {name: (TRAINING_TASK_TYPES[name].primary_metric, TRAINING_TASK_TYPES[name].higher_is_better)
               for name in challenge_types}
    assert primary == {"segmentation": ("DSC", True), "classification": ("F1_macro", True), "detection": ("IoU", True),
                       "regression": ("MRE", False)}
    assert M.normalized_score("segmentation", {"DSC": 0.7}) == 0.7
    assert M.normalized_score("regression", {"MRE": 5.0}, baseline_metrics={"MRE": 20.0}) == 0.75
    assert M.normalized_score("regression", {"MRE": 30.0}, baseline_metrics={"MRE": 20.0}) == 0.0
    assert M.normalized_score("regression", {"MRE": 10.0}, image_diagonal=100.0) == 0.9
    assert M.normalized_score("regression", {"MRE": 10.0, "NMRE": 0.2}) == pytest.approx(0.8)
    assert M.normalized_score("detection", {"IoU": float("nan")}) == 0.0
    with pytest.raises(ValueError):
        M.normalized_score("regression", {"MRE": 1.0})
    tasks = [TaskSpec(id="s", type="segmentation", num_classes=2), TaskSpec(id="r", type="regression", num_points=2)]
    score = M.mean_normalized_score({"s": {"DSC": 0.5}, "r": {"MRE": 5.0}}, tasks, baseline_metrics={"r": {"MRE": 10.0}})
    assert score == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------
# trivial baselines
# ------------------------------------------------------------------------------------------------


def test_classification_baseline_is_class_frequencies():
    task = TaskSpec(id="c", type="classification", num_classes=3)
    eval_labels = np.array([1, 1, 0])
    probs = M.trivial_baseline_predictions(task, [0, 1, 1, 1], eval_labels)
    np.testing.assert_allclose(probs, np.tile([0.25, 0.75, 0.0], (3, 1)))
    out = M.classification_metrics(probs, eval_labels, 3)
    assert out["Accuracy"] == pytest.approx(2 / 3)
    assert out["AUC"] == 0.0  # class 2 never occurs in the labels: the challenge's AUC is 0.0


def test_segmentation_baseline_majority_mask_or_empty():
    task = TaskSpec(id="s", type="segmentation", num_classes=2)
    # Large structures covering the left half: the per-pixel vote is the left half, at any size.
    train = []
    for h, w in [(8, 8), (16, 16), (8, 16)]:
        m = np.zeros((h, w), int)
        m[:, : w // 2] = 1
        train.append(m)
    (pred,) = M.trivial_baseline_predictions(task, train, [np.zeros((4, 6), int)])
    expected = np.zeros((4, 6), int)
    expected[:, :3] = 1
    np.testing.assert_array_equal(pred, expected)
    # Small lesions in different places: the vote is all background, so the baseline is the empty mask.
    small = [np.zeros((10, 10), int) for _ in range(3)]
    small[0][0, 0] = small[1][5, 5] = small[2][9, 9] = 1
    (pred,) = M.trivial_baseline_predictions(task, small, [np.zeros((5, 7), int)])
    assert pred.shape == (5, 7) and not pred.any()


def test_detection_and_regression_baselines_scale_normalised_means():
    det = TaskSpec(id="d", type="detection", num_classes=1)
    # Normalised boxes (0.1, 0.2, 0.5, 0.6) and (0.3, 0.4, 0.7, 0.8): mean (0.2, 0.3, 0.6, 0.7).
    train = [np.array([10, 20, 50, 60]), np.array([[60, 40, 140, 80]])]
    preds = M.trivial_baseline_predictions(det, train, [None], train_sizes=[(100, 100), (100, 200)], eval_sizes=[(10, 20)])
    np.testing.assert_allclose(preds[0]["boxes"], [[4, 3, 12, 7]])
    with pytest.raises(ValueError, match="train_sizes"):
        M.trivial_baseline_predictions(det, train, [None])

    reg = TaskSpec(id="r", type="regression", num_points=2)
    # Normalised points: image 0 (0.5, 0.25), (1, 1); image 1 (0.25, 0.75), (0, 0).
    train = [np.array([[50, 25], [100, 100]]), np.array([[50, 75], [0, 0]])]
    preds = M.trivial_baseline_predictions(reg, train, [None, None], train_sizes=[(100, 100), (100, 200)],
                                           eval_sizes=[(10, 10), (20, 40)])
    np.testing.assert_allclose(preds[0], [[3.75, 5.0], [5.0, 5.0]])
    np.testing.assert_allclose(preds[1], [[15.0, 10.0], [20.0, 10.0]])


# ------------------------------------------------------------------------------------------------
# paired bootstrap
# ------------------------------------------------------------------------------------------------


def test_bootstrap_clearly_better_model():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0.3, 0.6, size=200)
    model = baseline + 0.2 + rng.normal(0, 0.05, size=200)
    diff, lower, upper = M.bootstrap_difference_ci(model, baseline)
    assert lower > 0 and lower < 0.2 < upper
    assert diff == pytest.approx((model - baseline).mean())
    # Errors (lower better): the model's error is 1 px smaller; the sign flip makes that positive.
    diff, lower, upper = M.bootstrap_difference_ci(10 - model * 5, 10 - baseline * 5, higher_is_better=False)
    assert lower > 0 and lower < 1.0 < upper


def test_bootstrap_equal_models_straddle_zero():
    rng = np.random.default_rng(1)
    baseline = rng.integers(0, 2, size=300).astype(float)
    noise = np.where(rng.permutation(300) < 150, 1.0, -1.0) * 0.1  # exactly zero-mean difference
    diff, lower, upper = M.bootstrap_difference_ci(baseline + noise, baseline, n_boot=500, seed=3)
    assert diff == pytest.approx(0.0) and lower < 0 < upper
    assert M.bootstrap_difference_ci(baseline + noise, baseline, n_boot=500, seed=3)[1] == lower  # seeded


def test_segmentation_without_distances_keeps_the_overlap_figures_and_leaves_out_every_distance():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 3, (12, 12)) for _ in range(3)]
    refs = [rng.integers(0, 3, (12, 12)) for _ in range(3)]
    full = M.segmentation_metrics(preds, refs, num_classes=3)
    fast = M.segmentation_metrics(preds, refs, num_classes=3, distances=False)
    assert not {k for k in fast if "HD" in k or k.endswith("_hd")}
    assert {k for k in full if "HD" not in k and not k.endswith("_hd")} == set(fast)
    assert fast["DSC"] == full["DSC"]
    np.testing.assert_array_equal(fast["per_sample_dsc"], full["per_sample_dsc"])


def test_the_evaluate_module_has_a_configuration_for_every_registered_type():
    from modeling_m2dino.tasks import EXTRA_TASKS, FMC_UIA_TASKS

    rng = np.random.default_rng(0)
    tasks = {task.type: task for task in FMC_UIA_TASKS + EXTRA_TASKS}  # the last of each type: 2 segmentation classes, 6 classes
    assert set(tasks) == set(TRAINING_TASK_TYPES)  # every type has a task to compare with
    samples = {  # per type: (predictions, references, options) in the module's input form
        "detection": ([[10, 12, 40, 50], [0, 0, 20, 20]], [[12, 10, 42, 48], [5, 5, 25, 25]], {}),
        "regression": (rng.uniform(0, 64, (3, 2, 2)).tolist(), rng.uniform(0, 64, (3, 2, 2)).tolist(), {}),
        "measurement": ([[170.0], [205.0], [180.0]], [[160.0], [210.0], [190.0]],
                        {"value_names": tasks["measurement"].labels}),
        "classification": (rng.dirichlet(np.ones(6), size=6).tolist(), [0, 1, 2, 3, 4, 5], {"num_classes": 6}),
        "segmentation": ([rng.integers(0, 2, (6, 7)) for _ in range(3)], [rng.integers(0, 2, (6, 7)) for _ in range(3)],
                         {"num_classes": 2}),
    }
    for name in TRAINING_TASK_TYPES:
        predictions, references, options = samples[name]
        computed = M.load_challenge_metric(name).compute(predictions=predictions, references=references, **options)
        kind = TRAINING_TASK_TYPES[name]
        expected = M.task_metrics(tasks[name], kind.stack([np.asarray(p, np.float64) for p in predictions]),
                                  kind.stack([np.asarray(r) for r in references]))
        primary = kind.primary_metric
        assert computed[primary] == pytest.approx(expected[primary]), name
