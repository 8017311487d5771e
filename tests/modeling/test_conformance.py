"""The conventions transformers users rely on: output flags from the config, `return_dict`, the loading policy
(missing weights initialised and reported, other shapes refused), safetensors only, the task list recorded with
the weights, shallow configs, and `torch.export`."""

import json
import os

import pytest
import torch
from conftest import four_task_batch, tiny_config
from safetensors import safe_open
from safetensors.torch import save_file

import modeling_m2dino as m2dino

SINGLE_TYPE_CLASSES = [
    m2dino.M2DinoForSemanticSegmentation,
    m2dino.M2DinoForImageClassification,
    m2dino.M2DinoForObjectDetection,
    m2dino.M2DinoForKeypointDetection,
]
ALL_CLASSES = [m2dino.M2DinoModel, *SINGLE_TYPE_CLASSES, m2dino.M2DinoForMultiTask]


@pytest.mark.parametrize("model_class", ALL_CLASSES, ids=lambda c: c.__name__)
def test_output_flags_come_from_the_config_when_the_call_does_not_say(model_class):
    config = tiny_config(num_hidden_layers=2, output_hidden_states=True, output_attentions=True)
    config._attn_implementation = "eager"  # attention weights need the eager kernel
    model = model_class(config).eval()
    output = model(torch.randn(1, 3, 32, 32))
    assert len(output.hidden_states) == 3 and len(output.attentions) == 2
    assert output.attentions[0].shape == (1, 2, 7, 7)
    # the call's own argument still wins
    quiet = model(torch.randn(1, 3, 32, 32), output_hidden_states=False, output_attentions=False)
    assert quiet.hidden_states is None and quiet.attentions is None


@pytest.mark.parametrize("model_class", ALL_CLASSES, ids=lambda c: c.__name__)
def test_return_dict_false_gives_the_outputs_tuple(model_class):
    torch.manual_seed(0)
    model = model_class(tiny_config(num_hidden_layers=2)).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    as_dict = model(pixel_values)
    as_tuple = model(pixel_values, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict)
    for (name, expected), value in zip(as_dict.items(), as_tuple):
        assert type(value) is type(expected), name
    model.config.return_dict = False
    assert isinstance(model(pixel_values), tuple)
    assert not isinstance(model(pixel_values, return_dict=True), tuple)


def test_multitask_without_labels_has_no_losses(config):
    model = m2dino.M2DinoForMultiTask(config).eval()
    pixel_values, tasks, labels = four_task_batch()
    output = model(pixel_values, tasks=tasks)
    assert output.loss is None and output.task_losses is None
    assert "task_losses" not in output.keys()
    assert set(model(pixel_values, tasks=tasks, labels=labels).task_losses) == set(tasks)


def test_single_type_outputs_hold_no_none_fields(config):
    model = m2dino.M2DinoForImageClassification(config).eval()
    output = model(torch.randn(2, 3, 32, 32))
    assert all(value is not None for value in output.values())
    assert set(output.keys()) == {"logits"}  # no router loss at inference


@pytest.mark.parametrize("num_layers, feature_layers", [(1, [0]), (2, [0, 1]), (3, [0, 1, 2]), (4, [0, 1, 2, 3]),
                                                        (12, [2, 5, 8, 11])])
def test_shallow_configs_get_valid_default_feature_layers(num_layers, feature_layers):
    config = tiny_config(num_hidden_layers=num_layers)
    assert config.feature_layers == feature_layers
    if num_layers <= 2:
        pixel_values, tasks, labels = four_task_batch()
        output = m2dino.M2DinoForMultiTask(config)(pixel_values, tasks=tasks, labels=labels)
        assert torch.isfinite(output.loss)


@pytest.mark.parametrize("head_class", [*SINGLE_TYPE_CLASSES, m2dino.M2DinoForMultiTask], ids=lambda c: c.__name__)
def test_head_class_loads_from_a_backbone_folder_with_its_new_heads_reported(tmp_path, head_class):
    torch.manual_seed(0)
    backbone = m2dino.M2DinoModel(tiny_config(num_hidden_layers=2))
    backbone.save_pretrained(tmp_path)
    model, info = head_class.from_pretrained(tmp_path, output_loading_info=True)
    missing = set(info["missing_keys"])
    expected = {name for name in model.state_dict() if name.startswith("heads.")}
    assert expected and missing == expected
    assert not info["mismatched_keys"] and not info["unexpected_keys"]
    for name, value in backbone.state_dict().items():
        assert torch.equal(model.m2dino.state_dict()[name], value), name
    # the new heads are initialised by _init_weights, not left as uninitialised memory
    for name, value in model.state_dict().items():
        if name.startswith("heads."):
            assert torch.isfinite(value).all(), name
            if name.endswith("norm.weight"):
                assert torch.equal(value, torch.ones_like(value)), name


def test_heads_missing_from_a_checkpoint_appear_in_the_load_report(tmp_path, caplog):
    m2dino.M2DinoModel(tiny_config(num_hidden_layers=2)).save_pretrained(tmp_path)
    m2dino.M2DinoForImageClassification.from_pretrained(tmp_path)
    assert "heads.breast_3cls.classifier.weight" in caplog.text and "MISSING" in caplog.text


def test_pickle_only_folder_is_refused_naming_the_file_and_the_conversion(tmp_path):
    model = m2dino.M2DinoModel(tiny_config(num_hidden_layers=2))
    model.save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match=r"pytorch_model\.bin is a pickle.*save_file\(torch\.load"):
        m2dino.M2DinoModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors only"):
        m2dino.M2DinoModel.from_pretrained(tmp_path, use_safetensors=False)
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path / "pickled", safe_serialization=False)


def test_pickle_only_folder_converted_as_told_loads(tmp_path):
    model = m2dino.M2DinoModel(tiny_config(num_hidden_layers=2))
    model.save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    torch.save(model.state_dict(), tmp_path / "model.pt")
    save_file(torch.load(tmp_path / "model.pt", weights_only=True), tmp_path / "model.safetensors")
    loaded = m2dino.M2DinoModel.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_saved_weights_record_their_tasks_in_router_row_order(tmp_path):
    model = m2dino.M2DinoForMultiTask(tiny_config(num_hidden_layers=2))
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as weights:
        recorded = json.loads(weights.metadata()["m2dino_tasks"])
        assert weights.metadata()["format"] == "pt"
        router = weights.get_tensor("m2dino.model.layer.1.mlp.router.task_logits")
    assert recorded == [[task.id, task.type] for task in model.config.task_specs]
    torch.testing.assert_close(router, model.m2dino.model.layer[1].mlp.router.task_logits.detach())


def _rewrite_tasks(folder, change):
    with open(folder / "config.json") as f:
        config = json.load(f)
    config["tasks"] = change(config["tasks"])
    with open(folder / "config.json", "w") as f:
        json.dump(config, f)


def test_config_with_swapped_tasks_is_refused_naming_them(tmp_path):
    m2dino.M2DinoForMultiTask(tiny_config(num_hidden_layers=2)).save_pretrained(tmp_path)
    _rewrite_tasks(tmp_path, lambda tasks: [tasks[1], tasks[0], *tasks[2:]])
    first, second = tiny_config().task_ids[:2]
    with pytest.raises(ValueError, match=rf"row 0: '{first}' in the weights, '{second}' in the config; "
                                         rf"row 1: '{second}' in the weights, '{first}' in the config"):
        m2dino.M2DinoForMultiTask.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not match the router rows"):
        m2dino.M2DinoModel.from_pretrained(tmp_path)


def test_config_with_a_renamed_or_retyped_task_is_refused(tmp_path):
    m2dino.M2DinoForMultiTask(tiny_config(num_hidden_layers=2)).save_pretrained(tmp_path)
    renamed = tmp_path / "renamed"
    m2dino.M2DinoModel.from_pretrained(tmp_path).save_pretrained(renamed)
    _rewrite_tasks(renamed, lambda tasks: [dict(tasks[0], id="renamed_task"), *tasks[1:]])
    with pytest.raises(ValueError, match=f"row 0: '{tiny_config().task_ids[0]}' in the weights, 'renamed_task' in"):
        m2dino.M2DinoModel.from_pretrained(renamed)
    retyped = [dict(t, type="classification", num_classes=3) if t["id"] == "IUGC" else t for t in tiny_config().tasks]
    with pytest.raises(ValueError, match="'IUGC' \\(regression in the weights, classification in the config\\)"):
        m2dino.M2DinoModel.from_pretrained(tmp_path, tasks=retyped, ignore_mismatched_sizes=True)


def test_unchanged_folder_and_appended_tasks_load(tmp_path):
    model = m2dino.M2DinoForMultiTask(tiny_config(num_hidden_layers=2)).eval()
    model.save_pretrained(tmp_path)
    loaded = m2dino.M2DinoForMultiTask.from_pretrained(tmp_path).eval()
    pixel_values, tasks, _ = four_task_batch()
    for task in tasks:
        torch.testing.assert_close(loaded(pixel_values, tasks=task).task_outputs[task].to_tuple()[0],
                                   model(pixel_values, tasks=task).task_outputs[task].to_tuple()[0])
    # a task appended at the end re-initialises the router (explicitly), which is no disagreement
    grown = tiny_config().tasks + [m2dino.TaskSpec("new_task", "classification", num_classes=4).to_dict()]
    m2dino.M2DinoForMultiTask.from_pretrained(tmp_path, tasks=grown, ignore_mismatched_sizes=True)


@pytest.mark.parametrize("model_class", [m2dino.M2DinoModel, *SINGLE_TYPE_CLASSES], ids=lambda c: c.__name__)
def test_torch_export_matches_eager(model_class):
    torch.manual_seed(0)
    model = model_class(tiny_config(num_hidden_layers=2)).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (pixel_values,))
    other_images = torch.randn(2, 3, 32, 32)
    eager, from_export = model(other_images), exported.module()(other_images)
    for name, value in eager.items():
        if torch.is_tensor(value):
            torch.testing.assert_close(from_export[name], value, rtol=1e-4, atol=1e-5, msg=name)
        else:
            for level, (a, b) in enumerate(zip(from_export[name], value)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{name}[{level}]")


def test_config_docstring_documents_every_m2dino_field_with_its_real_default():
    import ast
    import re

    doc = m2dino.M2DinoConfig.__doc__
    documented = dict(re.findall(r"^\s{8}(\w+) \(`[^`]+`, \*optional\*, defaults to (.+?)\):$", doc, re.MULTILINE))
    own_fields = [name for name in m2dino.M2DinoConfig.__annotations__ if not name.startswith("_")]
    assert own_fields and not [name for name in own_fields if name not in doc], "undocumented M2DINO fields"
    config = m2dino.M2DinoConfig()
    assert len(documented) >= 20
    for name, stated in documented.items():
        stated = stated.strip("`")
        value = None if stated == "None" else ast.literal_eval(stated)
        assert getattr(config, name) == value, f"{name}: docstring says {stated}, the config has {getattr(config, name)!r}"
