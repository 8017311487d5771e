"""Hub cards: they parse with huggingface_hub, and every model-index number is the results file's number."""

import json
import math

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from m2dino_training import cards
from modeling_m2dino import FMC_UIA_TASKS, M2DinoConfig

TASKS = ["lung", "breast_3cls", "thyroid_nodule_det", "IUGC"]  # one of each type; the first (default) segments


def save_config(folder, **overrides):
    tasks = [t.to_dict() for t in FMC_UIA_TASKS if t.id in TASKS]
    tasks.sort(key=lambda t: TASKS.index(t["id"]))
    config = M2DinoConfig.from_preset("tiny", tasks=tasks, hidden_size=32, intermediate_size=64, **overrides)
    config.save_pretrained(folder)  # the card reads config.json only
    return config


def task_result(task_type, metrics, primary):
    return {
        "type": task_type, "group": "g", "n_eval": 7, "n_train": 21, "primary_metric": primary, "metrics": metrics,
        "baseline": {k: v / 2 if isinstance(v, float) and math.isfinite(v) else v for k, v in metrics.items()},
        "difference": {"per_sample": "per_sample_x", "mean": 0.1, "ci95_lower": -0.05, "ci95_upper": 0.25},
        "beats_baseline": False,
    }


def results_file(folder, source="synthetic"):
    """A results file in the evaluate format, with numbers whose decimal forms are long or awkward."""
    data = ({"source": "synthetic", "scale": 0.05, "image_size": 64, "seed": 3, "eval_split": "test"}
            if source == "synthetic" else {"source": source, "eval_split": "val"})
    results = {
        "score": 0.4285714285714286,
        "tasks": {
            "lung": task_result("segmentation", {"dice": 0.1 + 0.2, "hd95": float("nan"), "dice_lung": 1 / 3,
                                                 "hd95_lung": 12345.678901234567}, "dice"),
            "breast_3cls": task_result("classification", {"accuracy": 0.7142857142857143, "auc": 0.5, "f1_macro": 2 / 7,
                                                          "f1_weighted": 1e-7, "mcc": -0.125}, "f1_macro"),
            "thyroid_nodule_det": task_result("detection", {"iou": 0.6180339887498949, "ap50": 0.0}, "iou"),
            "IUGC": task_result("regression", {"mre": 14.885580238393162, "nmre": 0.1644639801322541}, "mre"),
        },
        "paradigm": "au", "run": "all", "data": data, "seed": 3, "max_steps": 10, "preset": "tiny", "router_mode": "task",
    }
    (folder / "eval_results.json").write_text(json.dumps(results, indent=2))
    return json.loads((folder / "eval_results.json").read_text())  # exactly what the file holds (NaN included)


def metadata(path):
    text = open(path, encoding="utf-8").read()
    return yaml.safe_load(text.split("---")[1])


def test_card_parses_and_every_model_index_number_is_the_results_number(tmp_path):
    save_config(tmp_path)
    results = results_file(tmp_path)
    path = cards.write_model_card(str(tmp_path))
    assert path == str(tmp_path / "README.md")

    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "transformers" and data.license == "apache-2.0"
    assert data.pipeline_tag == "image-segmentation"
    assert {"ultrasound", "medical-imaging", "mixture-of-experts", "multi-task", "dinov3", "synthetic-data"} <= set(data.tags)
    assert data.base_model is None

    # The hub library's own parser, on the raw YAML.
    model_index = metadata(path)["model-index"]
    name, parsed = model_index_to_eval_results(model_index)
    assert name == tmp_path.name
    assert len(model_index[0]["results"]) == len(TASKS)  # one result entry per task
    expected = {(task, metric): value for task, r in results["tasks"].items() for metric, value in r["metrics"].items()
                if math.isfinite(value)}
    found = {(e.dataset_config, e.metric_type): e.metric_value for e in parsed}
    assert found.keys() == expected.keys()  # NaN hd95 left out, nothing added
    for key, value in expected.items():
        assert found[key] == value and type(found[key]) is type(value), key
    hub_types = {e.dataset_config: e.task_type for e in parsed}
    assert hub_types == {"lung": "image-segmentation", "breast_3cls": "image-classification",
                         "thyroid_nodule_det": "object-detection", "IUGC": "keypoint-detection"}
    assert {(e.dataset_name, e.dataset_split) for e in parsed} == {("FMC_UIA synthetic suite", "test")}
    assert data.eval_results and len(data.eval_results) == len(expected)  # ModelCardData parses it too

    body = card.text
    for phrase in ("not a medical device", "synthetic data", "trust_remote_code=True", "pip install m2dino",
                   "m2dino-finetune", "AutoModelForSemanticSegmentation", "all-task unified", "| `lung` | segmentation |"):
        assert phrase in body, phrase
    assert "n/a" in body  # the NaN metric is shown as such, not as a number


def test_folder_data_and_extra_options(tmp_path):
    save_config(tmp_path, default_task="breast_3cls")
    results_file(tmp_path, source="/data/labs/FMC_UIA_2026")
    cards.write_model_card(str(tmp_path), repo_id="lab/m2dino-au", title="Our model", tags=["extra-tag"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag == "image-classification"
    assert card.data.datasets == ["FMC_UIA_2026"] and "extra-tag" in card.data.tags
    assert "synthetic-data" not in card.data.tags and "synthetic data" not in card.text
    assert {(e.dataset_name, e.dataset_split) for e in card.data.eval_results} == {("FMC_UIA_2026", "val")}
    assert card.data.model_name == "lab/m2dino-au" and 'from_pretrained("lab/m2dino-au")' in card.text
    assert "# Our model" in card.text
    cards.main([str(tmp_path), "--title", "Renamed"])  # a rerun keeps the options it is not given
    card = ModelCard.load(tmp_path / "README.md")
    assert "# Renamed" in card.text and card.data.model_name == "lab/m2dino-au" and "extra-tag" in card.data.tags
    cards.update_model_card(str(tmp_path), repo_id="lab/m2dino-v2")  # the library function the command calls
    card = ModelCard.load(tmp_path / "README.md")
    assert "# Renamed" in card.text and card.data.model_name == "lab/m2dino-v2" and "extra-tag" in card.data.tags
    with pytest.raises(TypeError, match="unknown card option"):
        cards.write_model_card(str(tmp_path), colour="red")


def test_folder_without_results_gets_a_card_without_numbers(tmp_path):
    save_config(tmp_path)
    cards.write_model_card(str(tmp_path))
    assert "model-index" not in metadata(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results is None
    assert "No evaluation results are stored with this model" in card.text
    assert "| dice |" not in card.text and "normalised score" not in card.text


@pytest.mark.parametrize("recorded", ["facebook/dinov3-vits16-pretrain-lvd1689m", None])
def test_upcycled_model_names_its_base_and_the_dinov3_licence(tmp_path, recorded):
    dinov3 = tmp_path / "my-dinov3-vits16"
    dinov3.mkdir()
    (dinov3 / "config.json").write_text(json.dumps({"model_type": "dinov3_vit", **({"_name_or_path": recorded} if recorded else {})}))
    model_dir = tmp_path / "model"
    config = save_config(model_dir)
    config.base_model = str(dinov3)  # what M2DinoForMultiTask.from_dinov3 records
    config.save_pretrained(model_dir)
    cards.write_model_card(str(model_dir))
    data = ModelCard.load(model_dir / "README.md").data
    assert data.base_model == (recorded or "my-dinov3-vits16")
    assert (data.license, data.license_name) == ("other", "dinov3-license") and data.license_link


def test_plots_and_routing_figures_are_embedded(tmp_path):
    save_config(tmp_path)
    results_file(tmp_path)
    (tmp_path / "results").mkdir()
    png = b"\x89PNG\r\n\x1a\n"
    for name in ("results/paradigms.png", "loss.png", "routing_experts.png", "routing_similarity.png"):
        (tmp_path / name).write_bytes(png)
    (tmp_path / "routing.json").write_text(json.dumps({"method": "exact", "tasks": ["lung", "IUGC", "breast_3cls"],
                                                       "similarity": [[1, 0.25, 0.5], [0.25, 1, 0.75], [0.5, 0.75, 1]]}))
    cards.write_model_card(str(tmp_path))
    text = ModelCard.load(tmp_path / "README.md").text
    for link in ("](results/paradigms.png)", "](loss.png)", "](routing_experts.png)", "](routing_similarity.png)"):
        assert link in text, link
    routing = text[text.index("## Expert routing"):]
    assert "routing_experts.png" in routing and "| `IUGC` | `breast_3cls` | 0.750 |" in routing
    assert "routing_experts.png" not in text[: text.index("## Expert routing")]


def test_adapter_card(tmp_path):
    base = tmp_path / "m2dino-base"
    save_config(base)
    adapter = tmp_path / "lung-lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                             "target_modules": ["up_proj", "down_proj"]}))
    results = results_file(tmp_path)["tasks"]["lung"]
    results["data"] = {"source": "synthetic", "eval_split": "test"}
    path = cards.write_adapter_card(str(adapter), str(base), "lung", "LoRA", results)
    card = ModelCard.load(path)
    assert card.data.library_name == "peft" and card.data.base_model == "m2dino-base"
    assert {"peft", "lora", "image-segmentation"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "image-segmentation"
    found = {e.metric_type: e.metric_value for e in card.data.eval_results}
    assert found == {k: v for k, v in results["metrics"].items() if math.isfinite(v)}
    assert "rank 8" in card.text and "not a medical device" in card.text

    # Plain {metric: value} results, and none at all.
    cards.write_adapter_card(str(adapter), str(base), "lung", "LoRA", {"dice": 0.5})
    assert [e.metric_value for e in ModelCard.load(path).data.eval_results] == [0.5]
    cards.write_adapter_card(str(adapter), str(base), "lung", "LoRA")
    assert "model-index" not in metadata(path) and "No evaluation results" in ModelCard.load(path).text


def test_bad_folders_fail_clearly(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        cards.write_model_card(str(tmp_path))
    with pytest.raises(SystemExit, match="not a saved model folder"):
        cards.main([str(tmp_path)])
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov3_vit"}))
    with pytest.raises(ValueError, match="not 'm2dino'"):
        cards.write_model_card(str(tmp_path))
    save_config(tmp_path)
    (tmp_path / "eval_results.json").write_text("{not json")
    with pytest.raises(SystemExit, match="eval_results.json is not valid JSON"):
        cards.main([str(tmp_path)])
