"""Task adapters: a head that holds a parameter or buffer itself survives PEFT's save and load."""

import torch
from conftest import tiny_config

import modeling_m2dino as m2dino
from m2dino_training import adapters, finetune

TASK = "thyroid_nodule_det"  # its head holds `queries` itself, beside its layers


def test_a_task_adapter_whose_head_holds_a_parameter_itself_reloads(tmp_path):
    tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in ("breast_2cls", TASK)]
    torch.manual_seed(0)
    base = m2dino.M2DinoForMultiTask(tiny_config(tasks=tasks, default_task="breast_2cls"))
    base.save_pretrained(tmp_path / "base")
    base = adapters.load_base(tmp_path / "base")
    fingerprint = adapters.weights_fingerprint(base)
    model = finetune.prepare_model(base, "lora", TASK, finetune.FinetuneArguments(model=str(tmp_path / "base")))
    head = model.base_model.model.heads[TASK].modules_to_save[TASK]
    with torch.no_grad():
        head.queries.add_(1.0)  # the adapter's copy differs from the base head
    folder = adapters.save_adapter(model, str(tmp_path / "lora"), TASK, "lora", str(tmp_path / "base"), fingerprint)
    reloaded = adapters.load_adapters(tmp_path / "base", folder)
    original = adapters.load_base(tmp_path / "base").heads[TASK].queries
    torch.testing.assert_close(reloaded.base_model.model.heads[TASK].modules_to_save[TASK].queries, original + 1.0)
    assert adapters.restore_head_member_keys(model, folder, TASK) == []  # the keys on disk are right already
