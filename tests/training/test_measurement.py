"""The measurement task type (`fetal_head_circumference`): head, loss and units; the synthetic task; and the whole
path of a task: m2dino-train, -evaluate, -predict, -score, the card and the experiment's tables."""

import json

import numpy as np
import pytest
import torch

import modeling_m2dino as m2dino
from m2dino_training import cards, evaluate, experiment, predict, score, study, train
from m2dino_training.data.fmc_uia import load_fmc_uia
from m2dino_training.data.synthetic import SyntheticUltrasoundSuite
from m2dino_training.task_types import TRAINING_TASK_TYPES
from m2dino_training.task_types.measurement import ellipse_perimeter, measurement_metrics
from conftest import tiny_config

TASK = "fetal_head_circumference"
FAST = ["--preset", "tiny", "--image_size", "32", "--synthetic_scale", "0.05", "--per_device_train_batch_size", "8",
        "--dataloader_num_workers", "0", "--eval_examples_per_task", "6", "--logging_steps", "1", "--disable_tqdm", "true"]


def measurement_config():
    spec = m2dino.known_task(TASK)
    return tiny_config(tasks=[spec.to_dict(), m2dino.known_task("cervix").to_dict()], default_task="cervix")


def test_the_task_is_an_extra_task_not_a_challenge_task():
    assert TASK in [t.id for t in m2dino.EXTRA_TASKS] and TASK not in [t.id for t in m2dino.FMC_UIA_TASKS]
    assert len(m2dino.FMC_UIA_TASKS) == 27
    kind = TRAINING_TASK_TYPES["measurement"]
    assert kind.model_type is m2dino.TASK_TYPES["measurement"]
    assert (kind.primary_metric, kind.higher_is_better) == ("MAE", False)


def test_values_come_back_in_units_and_the_loss_is_on_standardised_values():
    torch.manual_seed(0)
    model = m2dino.M2DinoForMultiTask(measurement_config()).eval()
    head = model.heads[TASK]
    assert torch.equal(head.value_mean, torch.zeros(1)) and torch.equal(head.value_std, torch.ones(1))
    head.set_value_statistics([170.0], [25.0])
    torch.nn.init.zeros_(head.regressor.weight)
    torch.nn.init.zeros_(head.regressor.bias)
    pixels = torch.randn(2, 3, 32, 32)
    labels = [{"values": torch.tensor([195.0])}, {"values": torch.tensor([170.0])}]
    out = model(pixels, tasks=[TASK, TASK], labels=labels)
    values = out.task_outputs[TASK]["values"]
    assert torch.allclose(values, torch.full((2, 1), 170.0))  # the mean, in mm, when the regressor says 0
    # Huber on standardised errors: (0 - 1) and (0 - 0) -> (0.5 * 1 + 0) / 2; the router loss comes on top.
    assert out.task_losses[TASK].item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="measurement.*finite"):
        model(pixels, tasks=[TASK, TASK], labels=[{"values": torch.tensor([float("nan")])}] * 2)


def test_statistics_are_saved_with_the_weights(tmp_path):
    model = m2dino.M2DinoForMultiTask(measurement_config())
    model.heads[TASK].set_value_statistics([160.0], [30.0])
    model.save_pretrained(tmp_path)
    loaded = m2dino.M2DinoForMultiTask.from_pretrained(tmp_path)
    assert loaded.heads[TASK].value_mean.item() == 160.0 and loaded.heads[TASK].value_std.item() == 30.0


def test_metrics_and_baseline():
    result = measurement_metrics([[110.0], [190.0]], [[100.0], [200.0]], ["head_circumference_mm"])
    assert result["MAE"] == result["head_circumference_mm_MAE"] == 10.0
    assert result["NMAE"] == pytest.approx(10.0 / 150.0)
    assert result["per_sample_absolute_error"].tolist() == [10.0, 10.0]
    spec = m2dino.known_task(TASK)
    baseline = TRAINING_TASK_TYPES["measurement"].baseline(spec, [[100.0], [200.0]], [[1.0], [2.0], [3.0]])
    assert [b.tolist() for b in baseline] == [[150.0]] * 3


def test_the_synthetic_value_is_the_drawn_head_circumference(tmp_path):
    suite = SyntheticUltrasoundSuite(scale=0.02, image_size=64, seed=1, tasks=[TASK])
    values = [suite.example(TASK, "train", i)["values"][0] for i in range(suite.size(TASK, "train"))]
    assert len(set(values)) == len(values) and all(60 < v < 500 for v in values)
    example = suite.example(TASK, "train", 0)
    assert example["mask"] is None and example["label"] is None
    assert ellipse_perimeter(1.0, 1.0) == pytest.approx(2 * np.pi)
    # The value measures the drawn head: it grows with the head's area (circumference ~ sqrt(area)).
    areas = [suite.part_mask(TASK, "train", i, "head").sum() for i in range(len(values))]
    assert np.corrcoef(np.sqrt(areas), values)[0, 1] > 0.8
    out = suite.write_challenge_layout(tmp_path / "layout", grid=False)
    loaded = load_fmc_uia(str(out), split="train", val_fraction=0.0)
    read = sorted(float(row["values"][0]) for row in loaded)
    assert read == pytest.approx(sorted(values), rel=1e-6)


def test_train_evaluate_predict_score_card_and_experiment(tmp_path):
    out = tmp_path / "model"
    results = train.main(["--paradigm", "ts", "--tasks", TASK, "--data", "synthetic", "--max_steps", "4",
                          "--output_dir", str(out), *FAST])[TASK]
    model_dir = out  # one run: the model is the output folder itself
    task_result = results["tasks"][TASK]
    assert task_result["type"] == "measurement" and task_result["primary_metric"] == "MAE"
    assert {"MAE", "MAE_std", "head_circumference_mm_MAE"} <= set(task_result["metrics"])
    assert "baseline" in task_result and "difference" in task_result
    model = m2dino.M2DinoForMultiTask.from_pretrained(model_dir)
    assert model.heads[TASK].value_std.item() > 1.0  # fitted on the training values, in mm

    layout = tmp_path / "layout"
    SyntheticUltrasoundSuite(scale=0.02, image_size=48, seed=3, tasks=[TASK]).write_challenge_layout(layout, grid=False)
    evaluated = evaluate.main(["--model", str(model_dir), "--data", str(layout), "--output", str(tmp_path / "e.json")])
    predict.main(["--model", str(model_dir), "--data", str(layout / "val"), "--out", str(tmp_path / "pred")])
    records = json.loads((tmp_path / "pred" / "measurement_predictions.json").read_text())
    assert records and all(len(r["predicted_values"]) == 1 for r in records)
    scores = score.main(["--data", str(layout / "val"), "--predictions", str(tmp_path / "pred")])
    scored = scores["measurement"][TASK]
    assert scored["num_samples"] == evaluated["tasks"][TASK]["n_eval"]
    assert scored["MAE"] == pytest.approx(evaluated["tasks"][TASK]["metrics"]["MAE"], rel=1e-5)
    assert scores["summary"]["measurement"]["MAE"] == pytest.approx(scored["MAE"])

    card = cards.write_model_card(str(model_dir))
    text = open(card, encoding="utf-8").read() if isinstance(card, str) else str(card)
    assert TASK in text and "1 value" in text

    plan = experiment.main(["--tasks", TASK, "lung", "--paradigms", "ts,au", "--scales", "1", "--seeds", "1",
                            "--output_dir", str(tmp_path / "study"), "--dry_run", *FAST[:4]])
    assert plan["runs"] and any(TASK in run.tasks for run in plan["runs"])
    row = {"type": "measurement", "metrics": {"MAE": 5.0}, "baseline": {"MAE": 20.0}}
    assert study.task_score(row) == pytest.approx(0.75)
    assert study.TYPE_COLOURS["measurement"] == "tab:purple"
