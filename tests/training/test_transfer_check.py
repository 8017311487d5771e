"""The transfer check's bookkeeping: pair names, the interval over seeds, the verdicts and resuming."""

import json
import math

import pytest

from modeling_m2dino import FMC_UIA_TASKS

from m2dino_training import study, transfer_check
from m2dino_training.data.synthetic import TRANSFER_PAIRS


def test_pairs_by_name_or_tasks():
    assert transfer_check.parse_pairs(["conflicting", "cervix:FUGC"]) == [TRANSFER_PAIRS["conflicting"], ("cervix", "FUGC")]
    with pytest.raises(ValueError, match="neither a pair name"):
        transfer_check.parse_pairs(["cervix"])


def test_every_named_pair_is_two_different_challenge_tasks():
    challenge = {task.id for task in FMC_UIA_TASKS}
    assert {"consistent", "conflicting"} <= set(TRANSFER_PAIRS)
    for name, pair in TRANSFER_PAIRS.items():
        assert len(pair) == 2 and pair[0] != pair[1] and set(pair) <= challenge, name


def test_interval_over_seeds():
    # the check's interval is the study's (`study.ci95`)
    mean, lower, upper = study.ci95([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    # t(0.975, 2 dof) = 4.303, standard error 0.1 / sqrt(3)
    assert upper - mean == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3) and lower == pytest.approx(2 * mean - upper)
    assert math.isnan(study.ci95([0.4])[1])


def test_summary_signs_lower_is_better_metrics_and_gives_verdicts():
    seeds = [0, 1, 2]
    scores = {}
    for seed in seeds:
        scores[(seed, ("a",))] = {"a": (0.5, "classification")}
        scores[(seed, ("b",))] = {"b": (5.0 + seed, "regression")}  # MRE: lower is better
        scores[(seed, ("a", "b"))] = {"a": (0.6 + 0.01 * seed, "classification"), "b": (7.0 + seed, "regression")}
    rows = {r["task"]: r for r in transfer_check.summarise(scores, [("a", "b")], seeds)}
    assert rows["a"]["difference"] == pytest.approx(0.11) and rows["a"]["verdict"] == "positive transfer"
    assert rows["b"]["difference"] == pytest.approx(-2.0) and rows["b"]["verdict"] == "negative transfer"
    assert rows["b"]["metric"] == "MRE"
    assert "| a+b | a | F1_macro |" in transfer_check.format_rows(rows.values())


def test_a_saved_model_is_not_trained_again(tmp_path, monkeypatch):
    args = transfer_check.argparse.Namespace(output_dir=str(tmp_path), scale=0.1, image_size=64, max_steps=5,
                                             batch_size=4, eval_examples=8)
    folder = tmp_path / "scale0.1_px64_steps5_bs4_eval8" / "seed1" / "breast_2cls"
    folder.mkdir(parents=True)
    results = {"tasks": {"breast_2cls": {"type": "classification", "primary_metric": "F1_macro", "metrics": {"F1_macro": 0.7}}}}
    (folder / "eval_results.json").write_text(json.dumps(results))

    def no_training(argv):
        raise AssertionError(f"trained again: {argv}")

    monkeypatch.setattr("m2dino_training.train.main", no_training)
    assert transfer_check.train_or_load(["breast_2cls"], 1, args, []) == {"breast_2cls": (0.7, "classification")}
    with pytest.raises(AssertionError, match="trained again"):
        transfer_check.train_or_load(["breast_2cls"], 2, args, [])


def test_the_check_trains_every_task_alone_and_every_pair_per_seed_and_writes_its_rows(tmp_path, monkeypatch, capsys):
    trained = []

    def stand_in(tasks, seed, args, extra):
        trained.append((tuple(tasks), seed))
        return {task: (0.5 + 0.1 * (len(tasks) - 1) + 0.01 * seed, "classification") for task in tasks}

    monkeypatch.setattr(transfer_check, "train_or_load", stand_in)
    args = transfer_check.argparse.Namespace(output_dir=str(tmp_path), seeds=[0, 1], max_steps=5)
    rows = transfer_check.transfer_check([("a", "b")], args, ["--preset", "tiny"])
    assert sorted(trained) == sorted((tasks, seed) for seed in (0, 1) for tasks in (("a",), ("b",), ("a", "b")))
    assert [(r["task"], r["difference"]) for r in rows] == [("a", pytest.approx(0.1)), ("b", pytest.approx(0.1))]
    assert json.loads((tmp_path / "transfer_check.json").read_text())[0]["pair"] == "a+b"
    assert "plan: 3 models x 2 seeds (6 trainings)" in capsys.readouterr().out
