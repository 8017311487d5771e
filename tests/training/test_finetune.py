"""m2dino-finetune: method comparison, task adapters (save, reload in a fresh process, switch, merge), new tasks,
and the errors for bad input. Tiny random models at 32 px and a few steps."""

import copy
import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import tiny_config

import modeling_m2dino as m2dino
from m2dino_training import adapters, finetune
from m2dino_training.data.synthetic import SyntheticUltrasoundSuite
from m2dino_training.new_task import add_task, read_task_file

TASKS = ["breast_2cls", "lung_2cls", "cervix_multi", "thyroid_nodule_det"]
FAST = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--dataloader_num_workers", "0", "--synthetic_scale",
        "0.05", "--eval_examples_per_task", "4", "--warmup_steps", "0", "--disable_tqdm", "true", "--seed", "3"]
NEW_TASK = {"id": "kidney_stone_cls", "type": "classification", "labels": ["no_stone", "stone"], "group": "abdomen"}


pytestmark = pytest.mark.usefixtures("one_thread")


def save_base(path, seed=0):
    tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in TASKS]
    config = tiny_config(tasks=tasks, default_task="breast_2cls")
    torch.manual_seed(seed)
    m2dino.M2DinoForMultiTask(config).save_pretrained(path)
    m2dino.M2DinoImageProcessor.from_config(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_base(tmp_path_factory.mktemp("finetune") / "base")


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def comparison(base_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("compare"))
    rows = finetune.main(["--model", base_dir, "--task", "breast_2cls", "--methods", "linear-probe,lora", "--merge",
                          "--output_dir", out, *FAST])
    return rows, out


def task_logits(model, pixels, task):
    with torch.no_grad():
        return model(pixels, tasks=task).task_outputs[task].logits


def test_method_comparison_writes_its_table_with_true_parameter_counts(comparison, base_dir):
    rows, out = comparison
    assert [r["method"] for r in rows] == ["linear-probe", "lora"]
    with open(os.path.join(out, "finetune_breast_2cls.csv"), newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["linear-probe", "lora"]
    for column in ("trainable_params", "trainable_percent", "metric_Accuracy", "metric_AUC", "metric_F1_macro",
                   "metric_MCC", "baseline_Accuracy", "train_seconds", "peak_memory_mib"):
        assert column in table[0], column
    with open(os.path.join(out, "finetune_breast_2cls.json")) as f:
        assert json.load(f)["settings"]["max_steps"] == 2
    assert "| lora |" in open(os.path.join(out, "finetune_breast_2cls.md")).read()

    base = adapters.load_base(base_dir)
    head = sum(p.numel() for p in base.heads["breast_2cls"].parameters())
    args = finetune.FinetuneArguments(model=base_dir)
    probe = finetune.prepare_model(copy.deepcopy(base), "linear-probe", "breast_2cls", args)
    assert rows[0]["trainable_params"] == head == finetune.count_parameters(probe)[0]
    assert rows[0]["total_params"] == sum(p.numel() for p in base.parameters())
    lora = finetune.prepare_model(copy.deepcopy(base), "lora", "breast_2cls", args)
    # LoRA adds r * (in + out) per targeted linear: q/k/v/o of every layer and every expert's up/down projection.
    targeted = [m for name, m in base.named_modules() if isinstance(m, torch.nn.Linear)
                and (name.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "o_proj") or ".experts." in name)]
    assert len(targeted) == 4 * 4 + 2 * 4 * 2  # 4 layers x 4 projections; 2 MoE layers x 4 experts x 2
    expected = head + sum(args.lora_r * (m.in_features + m.out_features) for m in targeted)
    assert rows[1]["trainable_params"] == expected == lora.get_nb_trainable_parameters()[0]
    assert rows[1]["trainable_percent"] == pytest.approx(100 * expected / lora.get_nb_trainable_parameters()[1])
    for row in rows:
        assert row["metrics"]["Accuracy"] >= 0 and "Accuracy" in row["baseline"] and row["train_seconds"] > 0


def test_every_saved_folder_has_a_card(comparison):
    _, out = comparison
    for folder in ("linear-probe/breast_2cls", "lora/breast_2cls", "lora-merged/breast_2cls"):
        assert os.path.isfile(os.path.join(out, folder, "README.md")), folder
        assert os.path.isfile(os.path.join(out, folder, "eval_results.json")), folder
    assert not os.path.exists(os.path.join(out, "lora", "README.md"))  # no blank PEFT card in the adapter root


def test_merged_export_equals_the_adapter_and_loads_without_peft(comparison, base_dir, pixels):
    _, out = comparison
    adapted = adapters.load_adapters(base_dir, os.path.join(out, "lora"))
    merged_dir = os.path.join(out, "lora-merged", "breast_2cls")
    assert not os.path.exists(os.path.join(merged_dir, "adapter_config.json"))
    merged = m2dino.M2DinoForMultiTask.from_pretrained(merged_dir).eval()
    assert merged.config.default_task == "breast_2cls"
    torch.testing.assert_close(task_logits(merged, pixels, "breast_2cls"), task_logits(adapted, pixels, "breast_2cls"),
                               atol=1e-5, rtol=0)
    # merging later, from the saved adapter, gives the same model
    again = adapters.merge_adapter(base_dir, os.path.join(out, "lora", "breast_2cls"), os.path.join(out, "merged_again"))
    torch.testing.assert_close(task_logits(m2dino.M2DinoForMultiTask.from_pretrained(again), pixels, "breast_2cls"),
                               task_logits(merged, pixels, "breast_2cls"), atol=1e-5, rtol=0)


def make_adapter(base, task_id, seed):
    """A LoRA adapter for `task_id` with non-trivial weights (PEFT initialises LoRA B to zero)."""
    model = finetune.prepare_model(copy.deepcopy(base), "lora", task_id, finetune.FinetuneArguments(model="unused"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def test_two_task_adapters_reload_in_a_fresh_process_and_switch(base_dir, pixels, tmp_path):
    base = adapters.load_base(base_dir)
    fingerprint = adapters.weights_fingerprint(base)
    root = str(tmp_path / "adapters")
    expected = {}
    for seed, task in enumerate(["breast_2cls", "lung_2cls"]):
        model = make_adapter(base, task, seed)
        expected[task] = {t: task_logits(model, pixels, t) for t in ("breast_2cls", "lung_2cls")}
        adapters.save_adapter(model, root, task, "lora", base_dir, fingerprint, [])
    assert sorted(os.listdir(root)) == ["breast_2cls", "lung_2cls"]
    torch.save(pixels, tmp_path / "pixels.pt")
    script = textwrap.dedent(f"""
        import torch
        from m2dino_training.adapters import load_adapters, set_adapter
        pixels = torch.load({str(tmp_path / "pixels.pt")!r})
        model = load_adapters({base_dir!r}, {root!r})
        outputs = {{}}
        for adapter in ("breast_2cls", "lung_2cls"):
            set_adapter(model, adapter)
            with torch.no_grad():
                outputs[adapter] = {{t: model(pixels, tasks=t).task_outputs[t].logits for t in ("breast_2cls", "lung_2cls")}}
        torch.save(outputs, {str(tmp_path / "outputs.pt")!r})
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, timeout=300)
    reloaded = torch.load(tmp_path / "outputs.pt")
    for adapter in expected:
        for task in expected[adapter]:
            torch.testing.assert_close(reloaded[adapter][task], expected[adapter][task], atol=1e-6, rtol=0)
    # switching matters: each adapter changes its own task's head and the shared backbone
    assert not torch.allclose(expected["breast_2cls"]["breast_2cls"], expected["lung_2cls"]["breast_2cls"])


@pytest.fixture(scope="module")
def new_task_run(base_dir, tmp_path_factory):
    """A lab's new task: its data in the challenge layout (synthetic images relabelled), a task file, fine-tuning."""
    root = tmp_path_factory.mktemp("new_task")
    suite = SyntheticUltrasoundSuite(scale=0.1, image_size=32, seed=0, tasks=["liver_lesion_2cls"])
    data = suite.write_challenge_layout(root / "data", splits=("train", "val"), grid=False)
    for split in ("train", "val"):
        path = data / split / "csv_files" / "synthetic_classification.csv"
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            row["task_id"] = NEW_TASK["id"]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    task_file = root / "task.json"
    task_file.write_text(json.dumps(NEW_TASK))
    out = str(root / "out")
    rows = finetune.main(["--model", base_dir, "--new_task", str(task_file), "--data", str(data), "--methods",
                          "linear-probe,lora", "--output_dir", out, "--learning_rate", "0.05", *FAST])
    return rows, out


def test_a_new_task_trains_without_disturbing_the_existing_tasks(new_task_run, base_dir, pixels):
    rows, out = new_task_run
    assert [r["task"] for r in rows] == [NEW_TASK["id"]] * 2
    base = adapters.load_base(base_dir).eval()
    adapted = adapters.load_adapters(base_dir, os.path.join(out, "lora"))
    assert adapted.config.task_ids == base.config.task_ids + [NEW_TASK["id"]]
    assert task_logits(adapted, pixels, NEW_TASK["id"]).shape == (3, 2)
    with adapted.disable_adapter():
        for task in ("breast_2cls", "lung_2cls"):
            assert torch.equal(task_logits(adapted, pixels, task), task_logits(base, pixels, task)), task
    # the adapter's router copies: only the new task's row trained, the other rows are the base's, bit for bit
    new_row = adapted.config.task_ids.index(NEW_TASK["id"])
    routers = [(name, table) for name, table in adapted.named_parameters() if name.endswith("task_logits")
               and ".modules_to_save." in name]
    assert len(routers) == 2  # two MoE layers
    base_tables = [p for n, p in base.named_parameters() if n.endswith("task_logits")]
    for (name, table), base_table in zip(routers, base_tables):
        assert torch.equal(table[:new_row], base_table), name
        assert not torch.allclose(table[new_row], base_table.mean(0)), name  # moved from its mean initialisation
    # linear-probe saved a plain model with the task: the existing tasks' outputs are exactly the base's
    probe = m2dino.M2DinoForMultiTask.from_pretrained(os.path.join(out, "linear-probe", NEW_TASK["id"])).eval()
    assert probe.config.task(NEW_TASK["id"]).labels == NEW_TASK["labels"]
    for task in ("breast_2cls", "cervix_multi"):
        assert torch.equal(task_logits(probe, pixels, task), task_logits(base, pixels, task)), task


def test_add_task_keeps_every_existing_weight_bit_identical(base_dir, tmp_path):
    base = adapters.load_base(base_dir)
    model = copy.deepcopy(base)
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(NEW_TASK))
    (spec,) = read_task_file(str(task_file), base.config.task_ids)
    index = add_task(model, spec, router_init="random")
    assert index == len(TASKS) and model.config.task_ids[-1] == spec.id
    grown = model.state_dict()
    for name, tensor in base.state_dict().items():
        if name.endswith("task_logits"):
            assert torch.equal(grown[name][:-1], tensor) and grown[name].shape[0] == len(TASKS) + 1
        else:
            assert torch.equal(grown[name], tensor), name


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "linear-probe,prompt-tuning"], r"unknown method\(s\) \['prompt-tuning'\]; valid: full, linear-probe, lora, lora-experts"),
        (["--task", "nope"], "unknown task 'nope'; valid: cervix_multi, breast_2cls"),
        (["--task", "breast_2cls", "--router_init", "zeros"], "unknown router_init"),
    ],
)
def test_bad_command_lines_name_the_valid_choices(base_dir, tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        finetune.main(["--model", base_dir, "--output_dir", str(tmp_path), *FAST, *argv])


@pytest.mark.parametrize(
    "entry, message",
    [
        ({k: v for k, v in NEW_TASK.items() if k != "group"}, r"missing field\(s\) \['group'\]"),
        ({k: v for k, v in NEW_TASK.items() if k != "labels"}, r"missing field\(s\) \['labels'\]"),
        ({**NEW_TASK, "id": "breast_2cls"}, "task id 'breast_2cls' already exists"),
        ({**NEW_TASK, "type": "ranking"}, "unknown type 'ranking'"),
        ({**NEW_TASK, "num_classes": 3}, "2 labels given for 3 classes"),
    ],
)
def test_bad_task_files_are_refused(base_dir, tmp_path, entry, message):
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(entry))
    with pytest.raises(SystemExit, match=message):
        finetune.main(["--model", base_dir, "--new_task", str(task_file), "--output_dir", str(tmp_path / "out"), *FAST])


def test_an_adapter_for_another_base_model_is_refused(comparison, tmp_path):
    _, out = comparison
    other = save_base(tmp_path / "other_base", seed=1)
    with pytest.raises(ValueError, match=r"trained on the base model .*base .*not on .*other_base"):
        adapters.load_adapters(other, os.path.join(out, "lora"))


def test_unknown_adapter_names_list_the_available_ones(comparison, base_dir):
    _, out = comparison
    with pytest.raises(ValueError, match=r"unknown adapter\(s\) \['lung_2cls'\]; available: breast_2cls"):
        adapters.load_adapters(base_dir, os.path.join(out, "lora"), names=["lung_2cls"])
    model = adapters.load_adapters(base_dir, os.path.join(out, "lora"))
    with pytest.raises(ValueError, match="unknown adapter 'nope'; loaded adapters: breast_2cls"):
        adapters.set_adapter(model, "nope")


def test_existing_results_are_not_overwritten_silently(comparison, base_dir):
    _, out = comparison
    with pytest.raises(SystemExit, match="already exist.*--overwrite"):
        finetune.main(["--model", base_dir, "--task", "breast_2cls", "--methods", "lora", "--output_dir", out, *FAST])


@pytest.mark.parametrize("method", ["linear-probe", "lora"])
def test_only_the_new_tasks_router_rows_learn_in_token_mode(method, pixels):
    tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in TASKS]
    model = m2dino.M2DinoForMultiTask(tiny_config(tasks=tasks, default_task="breast_2cls", router_mode="token"))
    add_task(model, m2dino.TaskSpec.from_dict({**NEW_TASK, "num_classes": 2}))
    model = finetune.prepare_model(model, method, NEW_TASK["id"], finetune.FinetuneArguments(model="unused"), new_task=True)
    model(pixels, tasks=NEW_TASK["id"], labels=[{"class_labels": 1}] * 3).loss.backward()
    tables = [(n, p) for n, p in model.named_parameters() if n.endswith("task_embedding") and p.requires_grad]
    assert len(tables) == 2 and all(".original_module." not in n for n, _ in tables)
    for name, table in tables:
        assert not table.grad[:-1].any() and table.grad[-1].any(), name
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not [n for n in trainable if ".gate." in n]  # the token gate is shared by every task
    assert all(n.endswith("task_embedding") or f"heads.{NEW_TASK['id']}" in n or "lora_" in n for n in trainable)


def test_a_new_measurement_task_gets_its_head_fitted_to_its_training_values(base_dir, tmp_path):
    # the measurement task of the registry (one of EXTRA_TASKS, drawn by the synthetic suite), new to the base model
    spec = m2dino.known_task("fetal_head_circumference")
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(spec.to_dict()))
    finetune.main(["--model", base_dir, "--new_task", str(task_file), "--methods", "linear-probe,lora",
                   "--output_dir", str(tmp_path / "out"), *FAST])
    saved = m2dino.M2DinoForMultiTask.from_pretrained(str(tmp_path / "out" / "linear-probe" / spec.id))
    args = finetune.FinetuneArguments(model=base_dir, synthetic_scale=0.05, eval_examples_per_task=4)
    data = finetune.load_task_data(args, spec.id, [*saved.config.task_specs], seed=3, image_size=32)
    values = np.stack([example["values"] for example in data.baseline_sets[spec.id]]).astype(np.float64)
    assert len(values) > 1 and values.std() > 0
    adapted = adapters.load_adapters(base_dir, str(tmp_path / "out" / "lora"))
    adapter_head = adapted.base_model.model.heads[spec.id].modules_to_save[spec.id]  # the adapter's own copy
    for head in (saved.heads[spec.id], adapter_head):
        torch.testing.assert_close(head.value_mean, torch.as_tensor(values.mean(0), dtype=torch.float32))
        torch.testing.assert_close(head.value_std, torch.as_tensor(values.std(0), dtype=torch.float32))

