"""Routing analysis: exact in "task" mode, token-averaged on held-out images in "token" mode; files and card."""

import json

import datasets
import numpy as np
import pytest
import torch

from m2dino_training import cards, routing
from modeling_m2dino import FMC_UIA_TASKS, M2DinoConfig, M2DinoForMultiTask, M2DinoImageProcessor

TASKS = ["breast_2cls", "lung", "thyroid_nodule_det", "IUGC"]


def save_model(folder, router_mode, seed=0, **overrides):
    tasks = [t.to_dict() for t in FMC_UIA_TASKS if t.id in TASKS]
    config = M2DinoConfig.from_preset("tiny", tasks=tasks, router_mode=router_mode, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=2, image_size=32, num_experts=5, num_experts_per_tok=2,
                                      decoder_hidden_size=16, **overrides)
    torch.manual_seed(seed)
    model = M2DinoForMultiTask(config)
    with torch.no_grad():  # routers far from their near-uniform initialisation, so routing differs by task
        for name, parameter in model.named_parameters():
            if ".router." in name:
                parameter.normal_(0.0, 2.0)
    model.save_pretrained(folder)
    M2DinoImageProcessor.from_config(config).save_pretrained(folder)
    return model


def hand_usage(logits: np.ndarray, k: int):
    """Softmax, top-k, renormalise, scatter: (gates, chosen), computed without the model's code."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = np.argsort(-probs, axis=-1)[..., :k]
    gates, chosen = np.zeros_like(probs), np.zeros_like(probs)
    np.put_along_axis(chosen, top, 1.0, axis=-1)
    picked = np.take_along_axis(probs, top, axis=-1)
    np.put_along_axis(gates, top, picked / picked.sum(-1, keepdims=True), axis=-1)
    return gates, chosen


def cosine(matrix):
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return unit @ unit.T


def test_task_mode_is_exact_from_the_router(tmp_path):
    model = save_model(tmp_path / "model", "task")
    report = routing.analyze_routing(str(tmp_path / "model"), output_dir=str(tmp_path / "out"))
    assert report["tasks"] == model.config.task_ids and report["data"] is None and report["method"].startswith("exact")
    similarities = []
    for layer in report["layers"]:
        logits = model.m2dino.model.layer[layer["layer"]].mlp.router.task_logits.detach().double().numpy()
        gates, chosen = hand_usage(logits, k=2)
        measured = np.array([layer["gate_weight"][t] for t in report["tasks"]])
        np.testing.assert_allclose(measured, gates, atol=1e-6)
        np.testing.assert_array_equal(np.array([layer["topk_frequency"][t] for t in report["tasks"]]), chosen)
        np.testing.assert_allclose(layer["similarity"], cosine(gates), atol=1e-6)
        similarities.append(cosine(gates))
    np.testing.assert_allclose(report["similarity"], np.mean(similarities, axis=0), atol=1e-6)

    # JSON and figures on disk; the JSON is the report.
    assert json.loads((tmp_path / "out" / "routing.json").read_text()) == json.loads(json.dumps(report))
    for name in routing.FIGURES:
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_token_mode_averages_over_tokens_of_synthetic_images(tmp_path):
    model = save_model(tmp_path, "token")
    report = routing.analyze_routing(str(tmp_path), data="synthetic", split="val", max_images_per_task=2, plots=False)
    assert report["data"]["images"] == {t: 2 for t in TASKS} and report["tasks"] == model.config.task_ids
    for layer in report["layers"]:
        for task in TASKS:
            assert sum(layer["gate_weight"][task]) == pytest.approx(1.0, abs=1e-6)  # usage is a distribution
            assert sum(layer["topk_frequency"][task]) == pytest.approx(2.0, abs=1e-6)
        assert np.diag(layer["similarity"]) == pytest.approx(1.0)

    # One task by hand: the same held-out images, the router logits, numpy top-k averaged over all tokens.
    examples = routing.held_out_examples("synthetic", "val", TASKS, 2, image_size=32)["lung"]
    processor = M2DinoImageProcessor.from_pretrained(str(tmp_path))
    model.eval()
    with torch.no_grad():
        logits = model.m2dino(processor([e["image"] for e in examples])["pixel_values"], tasks="lung",
                              output_router_logits=True).router_logits
    for layer, layer_logits in zip(report["layers"], logits):
        gates = hand_usage(layer_logits.double().numpy(), k=2)[0]
        np.testing.assert_allclose(layer["gate_weight"]["lung"], gates.mean(axis=(0, 1)), atol=1e-5)


def test_token_mode_on_a_datasets_folder(tmp_path):
    save_model(tmp_path / "model", "token")
    rng = np.random.default_rng(0)
    rows = {"image": [rng.integers(0, 255, (40, 48), dtype=np.uint8) for _ in range(3)],
            "task": ["breast_2cls"] * 3, "label": [0, 1, 0]}
    datasets.DatasetDict({"val": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "data"))
    report = routing.analyze_routing(str(tmp_path / "model"), data=str(tmp_path / "data"), plots=False)
    assert report["tasks"] == ["breast_2cls"] and report["data"]["images"] == {"breast_2cls": 3}
    assert sorted(report["missing_tasks"]) == sorted(set(TASKS) - {"breast_2cls"})
    with pytest.raises(ValueError, match="unknown split"):
        routing.analyze_routing(str(tmp_path / "model"), data=str(tmp_path / "data"), split="test", plots=False)


def test_generated_card_shows_the_routing(tmp_path):
    save_model(tmp_path, "task")
    cards.write_model_card(str(tmp_path), repo_id="lab/m2dino-tiny", title="Tiny -- model")
    routing.main(["--model", str(tmp_path)])
    text = (tmp_path / "README.md").read_text()
    assert "## Expert routing" in text and "](routing_experts.png)" in text and "](routing_similarity.png)" in text
    assert "# Tiny -- model" in text and 'from_pretrained("lab/m2dino-tiny")' in text  # the card kept its options

    (tmp_path / "README.md").write_text("# hand-written\n")  # never overwritten
    routing.analyze_routing(str(tmp_path), plots=False)
    assert (tmp_path / "README.md").read_text() == "# hand-written\n"


def test_bad_input_fails_clearly(tmp_path):
    with pytest.raises(SystemExit, match="no config.json"):
        routing.main(["--model", str(tmp_path)])
    save_model(tmp_path, "token")
    with pytest.raises(ValueError, match="pass --data"):
        routing.analyze_routing(str(tmp_path))
    with pytest.raises(SystemExit, match="unknown split 'tset'"):
        routing.main(["--model", str(tmp_path), "--data", "synthetic", "--split", "tset"])
    with pytest.raises(SystemExit, match="no such folder"):
        routing.main(["--model", str(tmp_path), "--data", str(tmp_path / "missing")])
