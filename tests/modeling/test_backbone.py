"""`M2DinoBackbone`: `AutoBackbone` on a saved folder, a feature pyramid of strides 4/8/16/32, and a transformers
UperNet head on top of it."""

import json

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoBackbone, UperNetConfig, UperNetForSemanticSegmentation
from transformers.utils import logging as hf_logging

import modeling_m2dino as m2dino

IMAGE = 64  # a 4 x 4 patch grid: strides 4, 8, 16, 32 give maps of 16, 8, 4 and 2 pixels


@pytest.fixture
def saved_multitask(tmp_path):
    torch.manual_seed(0)
    model = m2dino.M2DinoForMultiTask(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    return tmp_path, model


def test_auto_backbone_loads_a_saved_folder_and_returns_a_pyramid_of_strides_4_to_32(saved_multitask):
    path, model = saved_multitask
    backbone, info = AutoBackbone.from_pretrained(path, output_loading_info=True)
    assert isinstance(backbone, m2dino.M2DinoBackbone)
    # The encoder comes from the folder; only the pyramid's transposed convolutions are new.
    assert info["missing_keys"] and all(k.startswith("pyramid.") for k in info["missing_keys"])
    trained = model.m2dino.state_dict()
    for key, value in backbone.m2dino.state_dict().items():
        assert torch.equal(value, trained[key]), key

    config = model.config
    assert backbone.out_features == [f"stage{layer + 1}" for layer in config.feature_layers]
    assert backbone.channels == [config.hidden_size] * 4
    backbone.eval()
    pixel_values = torch.randn(2, 3, IMAGE, IMAGE)
    maps = backbone(pixel_values, tasks="breast_3cls").feature_maps
    assert [tuple(m.shape) for m in maps] == [(2, config.hidden_size, IMAGE // s, IMAGE // s) for s in (4, 8, 16, 32)]
    assert backbone.strides == [4, 8, 16, 32]
    # Stride 16 is the encoder's own map at the third selected layer, stride 32 its max-pooled fourth: the same
    # normalised maps the task heads read.
    levels = model.m2dino(pixel_values, tasks="breast_3cls").feature_maps
    torch.testing.assert_close(maps[2], levels[2])
    torch.testing.assert_close(maps[3], torch.nn.functional.max_pool2d(levels[3], 2))
    # The MoE layers route by task: another task gives other maps.
    assert not torch.allclose(backbone(pixel_values, tasks="IUGC").feature_maps[2], maps[2])


def test_saved_backbone_round_trips_with_its_pyramid(tmp_path):
    torch.manual_seed(0)
    backbone = m2dino.M2DinoBackbone(tiny_config()).eval()
    backbone.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoBackbone"] == "backbone_m2dino.M2DinoBackbone"
    assert (tmp_path / "backbone_m2dino.py").exists()
    loaded, info = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    pixel_values = torch.randn(1, 3, IMAGE, IMAGE)
    for expected, actual in zip(backbone(pixel_values).feature_maps, loaded.eval()(pixel_values).feature_maps):
        torch.testing.assert_close(actual, expected)


def test_other_stages_are_selected_by_out_indices_and_a_missing_encoder_weight_is_an_error(saved_multitask):
    path, model = saved_multitask
    backbone = AutoBackbone.from_pretrained(path, out_indices=[0, 1, 2, 3]).eval()
    assert backbone.out_features == ["stem", "stage1", "stage2", "stage3"]
    pixel_values = torch.randn(1, 3, IMAGE, IMAGE)
    hidden = model.m2dino(pixel_values, output_hidden_states=True).hidden_states
    stage2 = model.m2dino.tokens_to_map(model.m2dino.norm(hidden[2]), 1 + model.config.num_register_tokens, (4, 4))
    torch.testing.assert_close(backbone(pixel_values).feature_maps[2], stage2)

    with pytest.raises(ValueError, match="exactly 4 encoder stages"):
        m2dino.M2DinoBackbone(tiny_config(out_indices=[3, 4]))

    weights = load_file(path / "model.safetensors")
    del weights["m2dino.norm.weight"]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks 1 encoder weight.*m2dino\.norm\.weight"):
        AutoBackbone.from_pretrained(path)


def test_upernet_of_transformers_sits_on_the_backbone(saved_multitask):
    path, model = saved_multitask
    torch.manual_seed(0)
    config = UperNetConfig(backbone_config=model.config.to_dict(), num_labels=3, hidden_size=16, auxiliary_in_channels=32)
    upernet = UperNetForSemanticSegmentation(config)
    assert isinstance(upernet.backbone, m2dino.M2DinoBackbone)
    # The trained backbone object replaces the randomly initialised one.
    upernet.backbone = AutoBackbone.from_pretrained(path)
    pixel_values, labels = torch.randn(2, 3, IMAGE, IMAGE), torch.randint(0, 3, (2, IMAGE, IMAGE))
    outputs = upernet(pixel_values=pixel_values, labels=labels)
    assert outputs.logits.shape == (2, 3, IMAGE, IMAGE)
    outputs.loss.backward()
    assert upernet.backbone.m2dino.embeddings.patch_embeddings.weight.grad.abs().sum() > 0
    assert upernet.backbone.pyramid.levels[0][0].weight.grad.abs().sum() > 0


def test_backbone_loading_checks_the_task_list_like_every_class(saved_multitask):
    path, _ = saved_multitask
    config = json.loads((path / "config.json").read_text())
    config["tasks"] = [config["tasks"][1], config["tasks"][0], *config["tasks"][2:]]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match the router rows"):
        AutoBackbone.from_pretrained(path)


def test_backbone_loading_replaces_only_the_load_report_and_keeps_the_log_level(saved_multitask, caplog):
    path, _ = saved_multitask
    weights = load_file(path / "model.safetensors")
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})  # weights without their task list
    verbosity = hf_logging.get_verbosity()
    with caplog.at_level("WARNING"):
        AutoBackbone.from_pretrained(path)
    assert hf_logging.get_verbosity() == verbosity
    assert "record no task list" in caplog.text  # other messages still go out while it loads
    assert "LOAD REPORT" not in caplog.text  # the pyramid it initialises is reported by M2DinoBackbone instead
