import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file
from transformers import DINOv3ViTConfig, DINOv3ViTModel

import modeling_m2dino as m2dino
from modeling_m2dino.convert_dinov3 import main as convert_main


@pytest.fixture(scope="module")
def dinov3_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                             num_register_tokens=2, image_size=32, layerscale_value=0.7)
    model = DINOv3ViTModel(config).eval()
    path = tmp_path_factory.mktemp("dinov3")
    model.save_pretrained(path)
    return path, model


@pytest.mark.parametrize("router_mode", ["task", "token"])
def test_upcycled_model_computes_the_dinov3_hidden_state(dinov3_dir, router_mode):
    path, dinov3 = dinov3_dir
    model = m2dino.M2DinoModel.from_dinov3(path, router_mode=router_mode, num_experts=3, tasks=tiny_config().tasks).eval()
    assert model.config.moe_layers == [2, 3]
    pixel_values = torch.randn(3, 3, 32, 48)
    expected = dinov3(pixel_values).last_hidden_state
    actual = model(pixel_values, tasks=["IUGC", "breast_3cls", "cervix_multi"]).last_hidden_state
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)
    experts = model.model.layer[3].mlp.experts
    assert all(torch.equal(e.up_proj.weight, dinov3.model.layer[3].mlp.up_proj.weight) for e in experts)


def test_every_class_upcycles(dinov3_dir):
    path, _ = dinov3_dir
    for cls in (m2dino.M2DinoForMultiTask, m2dino.M2DinoForSemanticSegmentation, m2dino.M2DinoForKeypointDetection):
        model = cls.from_dinov3(path, tasks=tiny_config().tasks)
        assert torch.equal(model.m2dino.norm.weight, load_file(f"{path}/model.safetensors")["norm.weight"])


def test_missing_or_misshaped_backbone_weights_fail_loudly(dinov3_dir, tmp_path):
    path, _ = dinov3_dir
    state = load_file(f"{path}/model.safetensors")
    del state["layer.1.attention.q_proj.weight"]
    state["norm.bias"] = torch.zeros(5)
    save_file(state, f"{tmp_path}/model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ValueError, match=r"layer\.1\.attention\.q_proj\.weight.*norm\.bias: checkpoint \(5,\)"):
        m2dino.M2DinoModel.from_dinov3(tmp_path)
    with pytest.raises(ValueError, match="mis-shaped"):
        m2dino.M2DinoModel.from_dinov3(path, hidden_size=64, intermediate_size=128)


def test_convert_cli_writes_a_loadable_folder(dinov3_dir, tmp_path):
    path, dinov3 = dinov3_dir
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(tiny_config().tasks))
    convert_main([str(path), str(tmp_path / "out"), "--tasks", str(tasks_file), "--num_experts", "2"])
    model = m2dino.M2DinoForMultiTask.from_pretrained(tmp_path / "out").eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model.m2dino(pixel_values).last_hidden_state, dinov3(pixel_values).last_hidden_state,
                               atol=1e-4, rtol=0)
    assert (tmp_path / "out" / "preprocessor_config.json").exists()


REMOTE_SCRIPT = """
import sys, torch
sys.modules["modeling_m2dino"] = None  # this Python cannot import the package
from transformers import AutoImageProcessor, AutoModelForKeypointDetection
path = sys.argv[1]
model = AutoModelForKeypointDetection.from_pretrained(path, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=True)
pixel_values = processor(torch.load(path + "/probe.pt")["image"])["pixel_values"]
out = model(pixel_values, tasks="IUGC")
torch.save({"keypoints": out.keypoints, "heatmaps": out.heatmaps, "pixel_values": pixel_values}, path + "/remote.pt")
"""


def test_trust_remote_code_loads_in_a_python_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = m2dino.M2DinoForKeypointDetection(tiny_config()).eval()  # any class: the folder names all of them
    model.save_pretrained(tmp_path)
    processor = m2dino.M2DinoImageProcessor(size=32)
    processor.save_pretrained(tmp_path)
    image = torch.randint(0, 256, (40, 56), dtype=torch.uint8)
    torch.save({"image": image}, tmp_path / "probe.pt")
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSemanticSegmentation",
                                       "AutoModelForImageClassification", "AutoModelForObjectDetection",
                                       "AutoModelForKeypointDetection", "AutoBackbone"}
    subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path)], check=True, cwd=tmp_path)
    remote = torch.load(tmp_path / "remote.pt")
    local_model = m2dino.M2DinoForKeypointDetection.from_pretrained(tmp_path).eval()
    pixel_values = processor(image)["pixel_values"]
    torch.testing.assert_close(remote["pixel_values"], pixel_values)
    local = local_model(pixel_values, tasks="IUGC")
    torch.testing.assert_close(remote["keypoints"], local.keypoints)
    torch.testing.assert_close(remote["heatmaps"], local.heatmaps)
