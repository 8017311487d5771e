"""m2dino-bench --quick end to end, and the fast paths it times checked against straightforward ones."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_config

import modeling_m2dino as m2dino
from m2dino_training import bench
from modeling_m2dino.moe import TaskConditionedMoE, dispatch_to_experts


pytestmark = pytest.mark.usefixtures("one_thread")


def per_token_loop(tokens, weights, indices, experts):
    """The definition of the dispatch, one token and one of its k experts at a time."""
    rows = []
    for n in range(tokens.shape[0]):
        row = torch.zeros_like(tokens[n])
        for slot in range(indices.shape[1]):
            row = row + weights[n, slot] * experts[int(indices[n, slot])](tokens[n : n + 1])[0]
        rows.append(row)
    return torch.stack(rows)


def gradients(output, inputs, probe):
    return torch.autograd.grad((output * probe).sum(), inputs, allow_unused=True)


def test_dispatch_equals_a_per_token_loop_forward_and_backward():
    torch.manual_seed(0)
    moe = TaskConditionedMoE(tiny_config(num_experts=5))
    tokens = torch.randn(40, 32, requires_grad=True)
    weights = torch.rand(40, 2, requires_grad=True)
    # Experts 0..3 only, so expert 4 is one that nobody chose; each token's two experts differ.
    first = torch.randint(0, 4, (40,))
    indices = torch.stack([first, (first + torch.randint(1, 4, (40,))) % 4], dim=1)
    fast = dispatch_to_experts(tokens, weights, indices, moe.experts)
    slow = per_token_loop(tokens, weights, indices, moe.experts)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)

    inputs = [tokens, weights, *moe.experts.parameters()]
    probe = torch.randn_like(fast)
    for fast_grad, slow_grad in zip(gradients(fast, inputs, probe), gradients(slow, inputs, probe)):
        if slow_grad is None:  # the unchosen expert: no work, so no gradient either
            assert fast_grad is None
        else:
            torch.testing.assert_close(fast_grad, slow_grad, atol=1e-5, rtol=0)


def test_dispatch_has_second_order_gradients():
    torch.manual_seed(0)
    moe = TaskConditionedMoE(tiny_config(hidden_size=8, intermediate_size=8)).double()
    tokens = torch.randn(6, 8, dtype=torch.double, requires_grad=True)
    weights = torch.rand(6, 2, dtype=torch.double, requires_grad=True)
    indices = torch.tensor([[0, 1], [1, 2], [2, 0], [0, 1], [1, 0], [2, 1]])
    assert torch.autograd.gradgradcheck(lambda t, w: dispatch_to_experts(t, w, indices, moe.experts), (tokens, weights))


@pytest.mark.parametrize("router_mode", ["task", "token"])
def test_moe_layer_equals_routing_each_token_by_hand(router_mode):
    torch.manual_seed(0)
    moe = TaskConditionedMoE(tiny_config(router_mode=router_mode))
    for parameter in moe.router.parameters():
        torch.nn.init.normal_(parameter, std=1.0)  # spread the four tasks over different experts
    hidden_states = torch.randn(4, 5, 32)
    task_ids = torch.tensor([0, 1, 2, 3])
    output, router_logits = moe(hidden_states, task_ids), moe.router(hidden_states, task_ids)
    logits = router_logits if router_mode == "token" else router_logits[:, None, :].expand(-1, 5, -1)
    probs = logits.softmax(dim=-1)
    weights, indices = probs.topk(2, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    expected = per_token_loop(hidden_states.reshape(20, 32), weights.reshape(20, 2), indices.reshape(20, 2), moe.experts)
    torch.testing.assert_close(output, expected.view(4, 5, 32), atol=1e-5, rtol=0)


@pytest.mark.parametrize("router_mode", ["task", "token"])
def test_predict_all_tasks_equals_one_call_per_task(router_mode):
    torch.manual_seed(0)
    config = m2dino.M2DinoConfig.from_preset("tiny", image_size=32, router_mode=router_mode)
    model = m2dino.M2DinoForMultiTask(config).eval()
    for layer in model.m2dino.model.layer:
        if layer.is_moe:  # larger router weights than the initialisation, so tasks really route differently
            for parameter in layer.mlp.router.parameters():
                torch.nn.init.normal_(parameter, std=1.0)
    pixel_values = torch.randn(2, 3, 32, 32)
    together = model.predict_all_tasks(pixel_values)
    assert sorted(together) == sorted(config.task_ids) and len(together) == 27
    with torch.no_grad():
        for task in config.task_ids:
            separate = model(pixel_values, tasks=task).task_outputs[task]
            fields = [name for name, value in together[task].items() if torch.is_tensor(value)]
            assert fields
            for name in fields:
                torch.testing.assert_close(together[task][name], separate[name], atol=1e-5, rtol=0)


def test_flop_count_scales_only_the_moe_mlps():
    config = m2dino.M2DinoConfig.from_preset("small")
    dense = bench.forward_matmul_flops(config, 224, moe=False)
    moe = bench.forward_matmul_flops(config, 224, moe=True)
    tokens, width, inner = 1 + 4 + 196, 384, 1536
    assert dense["mlp"] == 12 * 2 * 2 * tokens * width * inner
    assert moe["mlp"] == dense["mlp"] * (6 + 6 * 2) / 12
    assert moe["attention_projections"] == dense["attention_projections"] and moe["router"] == 0
    assert moe["total"] == sum(v for k, v in moe.items() if k != "total")
    token_config = m2dino.M2DinoConfig.from_preset("small", router_mode="token")
    assert bench.forward_matmul_flops(token_config, 224, moe=True)["router"] == 6 * 2 * (tokens + 1) * width * 8


def test_quick_bench_writes_every_figure(tmp_path):
    output = tmp_path / "bench.json"
    bench.main(["--quick", "--output", str(output)])
    results = json.loads(output.read_text())

    assert {"cpu", "cores", "torch", "torch_threads"} <= set(results["machine"])
    training = results["training"]
    for key in ("dense_step_s", "dense_utilisation", "matmul_peak_flops_per_s"):
        assert math.isfinite(training[key]) and training[key] > 0
    for mode in ("task", "token"):
        figures = training["modes"][mode]
        for key in ("step_s", "measured_ratio", "flop_ratio", "measured_over_flop_ratio", "utilisation"):
            assert math.isfinite(figures[key]) and figures[key] > 0, (mode, key)
        assert figures["flop_ratio"] > 1
        inference = results["all_task_inference"]["modes"][mode]
        assert inference["tasks"] == 27 and inference["ratio"] > 0
        assert inference["max_abs_difference"] <= 1e-5
    memory = results["memory"]
    assert memory["method"] and memory["plain"]["step_peak_bytes"] > 0 and memory["checkpointing"]["step_peak_bytes"] > 0
    assert math.isfinite(memory["ratio"])
    assert results["compile"]["skipped"]
    assert set(results["targets"]) == set(bench.TARGETS)
    assert all(isinstance(t["met"], bool) for t in results["targets"].values())
    assert "| Figure" in results["table"]


def test_step_memory_sees_what_checkpointing_drops():
    args = SimpleNamespace(preset="tiny", image_size=128, batch_size=8, device="cpu", dtype="fp32")
    memory = bench.bench_memory(args, bench.Setup(args))
    plain, checkpointed = memory["plain"]["step_peak_bytes"], memory["checkpointing"]["step_peak_bytes"]
    activations = 8 * (128 // 16) ** 2 * 96 * 4  # one layer's output for the batch, fp32
    assert plain > 4 * activations  # the saved activations of several layers are counted
    assert 0 < checkpointed < 0.7 * plain
