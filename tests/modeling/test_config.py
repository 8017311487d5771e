import pytest

from modeling_m2dino import FMC_UIA_TASKS, M2DinoConfig, TaskSpec

TASK_TABLE = {  # task id: (type, classes or points, group), transcribed from the organisers' task list
    "FUGC": ("regression", 2, "obstetrics"), "IUGC": ("regression", 3, "obstetrics"),
    "fetal_femur": ("regression", 2, "obstetrics"), "fetal_head_pos_cls": ("classification", 8, "obstetrics"),
    "fetal_plane_cls": ("classification", 6, "obstetrics"), "fetal_sacral_pos_cls": ("classification", 8, "obstetrics"),
    "cervix": ("segmentation", 2, "obstetrics"), "cervix_multi": ("segmentation", 3, "obstetrics"),
    "fetal_abdomen_multi": ("segmentation", 5, "obstetrics"), "fetal_head": ("segmentation", 2, "obstetrics"),
    "fetal_heart": ("segmentation", 2, "obstetrics"), "head_symphysis_multi": ("segmentation", 3, "obstetrics"),
    "breast_2cls": ("classification", 2, "breast"), "breast_3cls": ("classification", 3, "breast"),
    "breast_lesion": ("segmentation", 2, "breast"), "lung_2cls": ("classification", 2, "lung"),
    "lung_disease_3cls": ("classification", 3, "lung"), "lung": ("segmentation", 2, "lung"),
    "thyroid_nodule_det": ("detection", 1, "thyroid"), "thyroid_nodule": ("segmentation", 2, "thyroid"),
    "cardiac_multi": ("segmentation", 4, "cardiovascular"), "carotid_artery": ("segmentation", 2, "cardiovascular"),
    "liver_lesion_2cls": ("classification", 2, "abdomen"), "organ_cls": ("classification", 6, "abdomen"),
    "ovary_tumor": ("segmentation", 2, "gynecology"), "uterine_fibroid_det": ("detection", 1, "gynecology"),
    "spinal_cord_injury_loc": ("detection", 1, "spine"),
}


def test_default_config_is_vit_small_with_moe_in_last_six_layers_and_the_27_tasks():
    config = M2DinoConfig()
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (384, 1536, 12)
    assert (config.num_attention_heads, config.num_register_tokens, config.patch_size) == (6, 4, 16)
    assert config.moe_layers == [6, 7, 8, 9, 10, 11]
    assert (config.num_experts, config.num_experts_per_tok, config.router_mode) == (8, 2, "task")
    assert [t["id"] for t in config.tasks] == list(TASK_TABLE)
    for spec in config.task_specs:
        task_type, count, group = TASK_TABLE[spec.id]
        assert (spec.type, spec.num_outputs, spec.group) == (task_type, count, group)
        assert len(spec.labels) == count
    assert config.default_task == "FUGC"


def test_moe_layers_default_to_last_half_of_small_models_and_presets_apply():
    assert M2DinoConfig(num_hidden_layers=4).moe_layers == [2, 3]
    assert M2DinoConfig(num_hidden_layers=24).moe_layers == list(range(18, 24))
    base = M2DinoConfig.from_preset("base", num_experts=4)
    assert (base.hidden_size, base.num_attention_heads, base.num_experts) == (768, 12, 4)
    tiny = M2DinoConfig.from_preset("tiny")
    assert tiny.moe_layers == list(range(tiny.num_hidden_layers // 2, tiny.num_hidden_layers))


def test_config_round_trips_with_task_registry(tmp_path):
    tasks = [TaskSpec("a", "classification", num_classes=3, group="g").to_dict(),
             TaskSpec("b", "regression", num_points=2, labels=["p", "q"]).to_dict()]
    config = M2DinoConfig.from_preset("tiny", tasks=tasks, default_task="b", router_mode="token")
    config.save_pretrained(tmp_path)
    loaded = M2DinoConfig.from_pretrained(tmp_path)
    assert loaded.tasks == config.tasks and loaded.default_task == "b" and loaded.router_mode == "token"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(router_mode="tokens"), "router_mode"),
        (dict(num_experts=2, num_experts_per_tok=3), "num_experts_per_tok"),
        (dict(moe_layers=[12]), "moe_layers"),
        (dict(default_task="nope"), "default_task"),
        (dict(tasks=[{"id": "x", "type": "segmentaton", "num_classes": 2}]), "valid types"),
        (dict(tasks=[{"id": "x", "type": "classification", "num_classes": 2}] * 2), "unique"),
        (dict(tasks=[{"id": "x", "type": "regression"}]), "num_points"),
        (dict(tasks=[{"id": "x.y", "type": "classification", "num_classes": 2}]), "task id"),
    ],
)
def test_bad_config_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        M2DinoConfig(**kwargs)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="small, base, tiny"):
        M2DinoConfig.from_preset("huge")


def test_registry_counts():
    counts = {}
    for task in FMC_UIA_TASKS:
        counts[task.type] = counts.get(task.type, 0) + 1
    assert counts == {"segmentation": 12, "classification": 9, "detection": 3, "regression": 3}
