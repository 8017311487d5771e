"""A plain `transformers.Trainer` with `compute_metrics`: predictions and labels reach it per example, in dataset
order, and score as the model's own evaluation does; in one process and in two (accelerate, gloo)."""

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from conftest import tiny_config
from fixtures import EXAMPLE_FEATURES as FEATURES
from PIL import Image
from transformers import Trainer, TrainingArguments

import modeling_m2dino as m2dino
from m2dino_training.data.collate import ProcessedExamples
from m2dino_training.data.hf_folder import load_data
from m2dino_training.evaluate import evaluate_model, examples_by_task, flat_metrics
from m2dino_training.hf_trainer import ChallengeMetrics, TrainerCollator
from modeling_m2dino.per_sample import outputs_by_task


def write_dataset(folder, tasks, count, seed=0):
    """`count` examples cycling through `tasks`; segmentation images at the processed size (32 px), the others at
    other sizes, so that boxes and points are scored in original pixels."""
    rng = np.random.default_rng(seed)
    by_id = {t.id: t for t in m2dino.FMC_UIA_TASKS}
    rows = {name: [] for name in FEATURES}
    for index in range(count):
        task = by_id[tasks[index % len(tasks)]]
        height, width = (32, 32) if task.type == "segmentation" else (int(rng.integers(24, 60)), int(rng.integers(24, 60)))
        row = dict(image=Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)), task=task.id, label=None,
                   mask=None, boxes=None, class_labels=None, points=None)
        if task.type == "segmentation":
            row["mask"] = Image.fromarray(rng.integers(0, task.num_classes, (height, width), dtype=np.uint8))
        elif task.type == "classification":
            row["label"] = int(rng.integers(0, task.num_classes))
        elif task.type == "detection":
            x0, y0 = rng.uniform(0, width / 2), rng.uniform(0, height / 2)
            row["boxes"] = [[x0, y0, x0 + rng.uniform(4, width / 2), y0 + rng.uniform(4, height / 2)]]
            row["class_labels"] = [0]
        else:
            row["points"] = [[rng.uniform(0, width), rng.uniform(0, height)] for _ in range(task.num_points)]
        for name in FEATURES:
            rows[name].append(row[name])
    datasets.Dataset.from_dict(rows, features=FEATURES).save_to_disk(str(folder))


def trainer_for(model, output_dir, batch_size=3):
    args = TrainingArguments(str(output_dir), per_device_eval_batch_size=batch_size, report_to=[], use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True)
    return Trainer(model=model, args=args, data_collator=TrainerCollator(model.config),
                   compute_metrics=ChallengeMetrics(model.config))


def test_plain_trainer_scores_a_two_task_model_as_its_own_evaluation(tmp_path):
    tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in ("cervix_multi", "breast_3cls")]
    config = tiny_config(tasks=tasks)
    torch.manual_seed(0)
    model = m2dino.M2DinoForMultiTask(config).eval()
    processor = m2dino.M2DinoImageProcessor(size=32)
    write_dataset(tmp_path / "data", ["cervix_multi", "breast_3cls"], 8)
    data = load_data(tmp_path / "data", split="val", registry=config.task_specs)

    own = flat_metrics(evaluate_model(model, processor, examples_by_task(data), batch_size=4))
    # Batches of 3 from alternating tasks: every batch mixes the two tasks, in different proportions.
    trainer = trainer_for(model, tmp_path / "out", batch_size=3)
    metrics = trainer.evaluate(ProcessedExamples(data, processor, config.task_specs))
    for key, value in own.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert len(own) > 10 and "eval_cervix_multi_DSC" in own and "eval_breast_3cls_F1_macro" in own


FOUR = ["cervix_multi", "breast_3cls", "thyroid_nodule_det", "IUGC"]


@pytest.fixture
def four_task_setup(tmp_path):
    config = tiny_config()
    torch.manual_seed(0)
    model = m2dino.M2DinoForMultiTask(config).eval()
    processor = m2dino.M2DinoImageProcessor(size=32)
    write_dataset(tmp_path / "data", FOUR, 11, seed=1)
    data = load_data(tmp_path / "data", split="val", registry=config.task_specs)
    return model, processor, data


def test_predict_returns_every_examples_prediction_and_label_in_dataset_order(four_task_setup, tmp_path):
    model, processor, data = four_task_setup
    config = model.config
    examples = ProcessedExamples(data, processor, config.task_specs)
    result = trainer_for(model, tmp_path / "out", batch_size=3).predict(examples)
    predictions, labels = result.predictions, result.label_ids
    assert len(predictions["task_ids"]) == len(labels["task_ids"]) == len(examples) == 11
    index = {t: i for i, t in enumerate(config.task_ids)}
    for position in range(len(examples)):
        item = examples[position]
        task = config.task(item["task"])
        assert predictions["task_ids"][position] == labels["task_ids"][position] == index[task.id]
        assert tuple(labels["original_sizes"][position]) == tuple(item["label"]["original_size"].tolist())
        with torch.no_grad():
            alone = model(item["pixel_values"][None], tasks=task.id).task_outputs[task.id]
        gathered = outputs_by_task({k: v[position : position + 1] for k, v in predictions.items()}, config.task_specs)[task.id][1]
        for field, value in gathered.items():
            torch.testing.assert_close(value, alone[field], rtol=1e-4, atol=1e-5)
        label = item["label"]
        if task.type == "classification":
            assert labels["class_labels"][position] == label["class_labels"]
        elif task.type == "segmentation":
            np.testing.assert_array_equal(labels["masks"][position], label["mask"].numpy())
        elif task.type == "detection":
            np.testing.assert_allclose(labels["boxes"][position][: len(label["boxes"])], label["boxes"].numpy())
            assert (labels["box_labels"][position][len(label["boxes"]) :] == -100).all()
        else:
            np.testing.assert_allclose(labels["points"][position][: task.num_points], label["points"].numpy())


def test_one_eval_set_per_task_scores_as_the_models_own_evaluation(four_task_setup, tmp_path):
    # One task per eval set (a dict of eval sets): labels were once paired element by element across batches.
    model, processor, data = four_task_setup
    grouped = examples_by_task(data)
    own = flat_metrics(evaluate_model(model, processor, grouped, batch_size=2))
    per_task_sets = {task: ProcessedExamples(data.select([i for i, t in enumerate(data["task"]) if t == task]), processor,
                                             model.config.task_specs) for task in FOUR}
    metrics = trainer_for(model, tmp_path / "out", batch_size=2).evaluate(per_task_sets)
    for task in FOUR:
        task_keys = [k for k in own if k.startswith(f"eval_{task}_")]
        assert task_keys
        for key in task_keys:
            expected = own[key]
            actual = metrics[key.replace("eval_", f"eval_{task}_", 1)]
            assert actual == pytest.approx(expected, rel=1e-4, abs=1e-4) or (np.isnan(actual) and np.isnan(expected)), key


@pytest.mark.parametrize(
    "cls, task",
    [(m2dino.M2DinoForSemanticSegmentation, "cervix_multi"), (m2dino.M2DinoForImageClassification, "breast_3cls"),
     (m2dino.M2DinoForObjectDetection, "thyroid_nodule_det"), (m2dino.M2DinoForKeypointDetection, "IUGC")],
)
def test_single_type_classes_predict_without_ignore_keys(four_task_setup, tmp_path, cls, task):
    multitask, processor, data = four_task_setup
    multitask.save_pretrained(tmp_path / "model")
    model = cls.from_pretrained(tmp_path / "model", default_task=task).eval()
    rows = [i for i, t in enumerate(data["task"]) if t == task]
    examples = ProcessedExamples(data.select(rows), processor, model.config.task_specs)
    args = TrainingArguments(str(tmp_path / "out"), per_device_eval_batch_size=2, report_to=[], use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, data_collator=TrainerCollator(model.config))
    result = trainer.predict(examples)
    pixel_values = torch.stack([examples[i]["pixel_values"] for i in range(len(examples))])
    with torch.no_grad():
        expected = model(pixel_values, tasks=task)
    fields = [k for k in expected.keys() if k not in model.config.keys_to_ignore_at_inference + ["loss"]]
    predictions = result.predictions if isinstance(result.predictions, tuple) else (result.predictions,)
    assert len(predictions) == len(fields) >= 1
    for field, value in zip(fields, predictions):
        torch.testing.assert_close(torch.as_tensor(value), expected[field], rtol=1e-4, atol=1e-5)
    assert np.isfinite(result.metrics["test_loss"])


def test_outputs_hold_no_none_fields_and_multitask_predictions_follow_the_batch(four_task_setup):
    model, _, _ = four_task_setup
    pixel_values = torch.randn(4, 3, 32, 32)
    for cls in (m2dino.M2DinoForSemanticSegmentation, m2dino.M2DinoForImageClassification,
                m2dino.M2DinoForObjectDetection, m2dino.M2DinoForKeypointDetection):
        single = cls(model.config).eval()
        with torch.no_grad():
            outputs = single(pixel_values)
        # A None among the items breaks the Trainer's padding across processes.
        assert all(value is not None for value in outputs.values()), [k for k, v in outputs.items() if v is None]
        assert "hidden_states" not in outputs and "attentions" not in outputs
    # Mixed batch: row i of every prediction field belongs to sample i; another task's rows hold -100.
    tasks = ["IUGC", "breast_3cls", "IUGC", "cervix_multi"]
    with torch.no_grad():
        outputs = model(pixel_values, tasks=tasks)
    predictions = outputs.predictions
    assert predictions["task_ids"].tolist() == [model.config.task_ids.index(t) for t in tasks]
    torch.testing.assert_close(predictions["regression_keypoints"][[0, 2]], outputs.task_outputs["IUGC"].keypoints)
    torch.testing.assert_close(predictions["classification_logits"][1], outputs.task_outputs["breast_3cls"].logits[0])
    assert (predictions["classification_logits"][[0, 2, 3]] == -100).all()
    assert (predictions["detection_pred_boxes"] == -100).all()  # no detection sample, but the key is there
    assert model.train()(pixel_values, tasks=tasks).predictions is None  # training pays nothing for it


DISTRIBUTED_SCRIPT = """
import json, sys
import numpy as np, torch
from transformers import Trainer, TrainingArguments
import modeling_m2dino as m2dino
from m2dino_training.data.collate import ProcessedExamples
from m2dino_training.data.hf_folder import load_data
from m2dino_training.hf_trainer import ChallengeMetrics, TrainerCollator

model_dir, data_dir, out_dir = sys.argv[1:4]
model = m2dino.M2DinoForMultiTask.from_pretrained(model_dir).eval()
data = load_data(data_dir, split="val", registry=model.config.task_specs)
examples = ProcessedExamples(data, m2dino.M2DinoImageProcessor(size=32), model.config.task_specs)
args = TrainingArguments(out_dir, per_device_eval_batch_size=2, report_to=[], use_cpu=True, remove_unused_columns=False,
                         disable_tqdm=True)
trainer = Trainer(model=model, args=args, data_collator=TrainerCollator(model.config), compute_metrics=ChallengeMetrics(model.config))
result = trainer.predict(examples)
if trainer.is_world_process_zero():
    np.savez(out_dir + "/predictions.npz", **{"p_" + k: v for k, v in result.predictions.items()},
             **{"l_" + k: v for k, v in result.label_ids.items()})
    json.dump({"metrics": result.metrics, "world_size": trainer.args.world_size}, open(out_dir + "/metrics.json", "w"))
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_two_processes_gather_the_same_predictions_labels_and_metrics(four_task_setup, tmp_path):
    model, processor, data = four_task_setup
    model.save_pretrained(tmp_path / "model")
    script = tmp_path / "predict.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    single = trainer_for(model, tmp_path / "single", batch_size=2).predict(ProcessedExamples(data, processor, model.config.task_specs))
    # 11 examples in batches of 2 over 2 processes: the last global batch is short, and accelerate pads it with
    # repeated examples that the gathering must drop.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29523"]
    run = subprocess.run([*launch, str(script), str(tmp_path / "model"), str(tmp_path / "data"), str(tmp_path / "ddp")],
                         capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-8000:]
    saved = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert saved["world_size"] == 2
    gathered = np.load(tmp_path / "ddp" / "predictions.npz")
    for key, value in single.predictions.items():
        np.testing.assert_allclose(gathered["p_" + key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    for key, value in single.label_ids.items():
        np.testing.assert_array_equal(gathered["l_" + key], value, err_msg=key)
    # The metrics of the gathered predictions match; the loss does not have to (it averages per-batch losses, and
    # the second process's padding batch repeats an example).
    compared = [k for k in single.metrics if k.startswith("test_") and k != "test_loss"
                and not k.endswith(("runtime", "per_second", "preparation_time"))]
    assert len(compared) > 20 and "test_score" in compared
    for key in compared:
        value, distributed = single.metrics[key], saved["metrics"][key]
        assert distributed == pytest.approx(value, rel=1e-4, abs=1e-5) or (np.isnan(value) and np.isnan(distributed)), key
