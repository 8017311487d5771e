"""Routing analysis: how each task uses the experts of every MoE layer, and which tasks route alike.

    m2dino-routing --model path/to/model                                   # "task" router: exact, no images
    m2dino-routing --model path/to/model --data synthetic --split val      # "token" router: held-out images

Per MoE layer and task it measures
- the mean gate weight of each expert: the top-k gate weights, renormalised to sum to one, scattered into a
  length-E vector and averaged over the task's routed units (so each task's row sums to one);
- the top-k frequency: the fraction of routed units that have the expert among their top k (rows sum to k);
and from the gate weights the task-to-task similarity: the cosine similarity of two tasks' mean gate-weight
vectors, per layer and averaged over layers.

In "task" router mode a task's routing is one decision per image, read exactly from `router.task_logits`.
In "token" mode every token is routed from its hidden state, so the usage is averaged over all tokens (class,
register and patch) of held-out images of the task. Writes `routing.json` and heat maps `routing_experts.png`
and `routing_similarity.png`; into the model folder by default, where `m2dino-card` embeds them (a card
`m2dino-card` wrote is refreshed).
"""

import argparse
import json
import os

import numpy as np
import torch

from .cards import read_model_config, refresh_model_card

FIGURES = ("routing_experts.png", "routing_similarity.png")


def load_backbone(model_dir: str):
    """The M2DINO encoder of a saved folder (any M2DINO class saved it), in eval mode."""
    read_model_config(model_dir)  # a clear error for a folder that is not an M2DINO model
    from modeling_m2dino import M2DinoModel

    return M2DinoModel.from_pretrained(model_dir).eval()


def moe_modules(model) -> list[tuple[int, torch.nn.Module]]:
    return [(index, model.model.layer[index].mlp) for index in model.config.moe_layers]


def dense_gates(moe, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gate weights, top-k indicator), both (..., E), from router logits (..., E) by the layer's own `route`.

    The weights are renormalised over the k chosen experts even when the model does not (norm_topk_prob=False),
    so that every unit's usage is a distribution and tasks compare on one scale.
    """
    weights, indices = moe.route(router_logits.float())
    weights = weights / weights.sum(dim=-1, keepdim=True)
    gates = torch.zeros_like(router_logits, dtype=torch.float32).scatter_(-1, indices, weights)
    chosen = torch.zeros_like(gates).scatter_(-1, indices, 1.0)
    return gates, chosen


@torch.no_grad()
def task_router_usage(model) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Layer -> (gate weights (T, E), top-k frequency (T, E)), exact from the "task" router's logits."""
    usage = {}
    for index, moe in moe_modules(model):
        gates, chosen = dense_gates(moe, moe.router.task_logits.detach())
        usage[index] = (gates.numpy(), chosen.numpy())
    return usage


@torch.no_grad()
def token_router_usage(model, processor, examples: dict[str, list[dict]], batch_size: int = 16):
    """Layer -> (gate weights (T, E), top-k frequency (T, E)) averaged over every token of each task's images,
    and the number of tokens per image. Rows of tasks without images are NaN."""
    task_index = {task_id: i for i, task_id in enumerate(model.config.task_ids)}
    shape = (len(task_index), model.config.num_experts)
    gate_sums = {index: torch.zeros(shape, dtype=torch.float64) for index, _ in moe_modules(model)}
    chosen_sums = {index: torch.zeros(shape, dtype=torch.float64) for index in gate_sums}
    token_counts = torch.zeros(len(task_index), dtype=torch.float64)
    tokens_per_image = None
    device = next(model.parameters()).device
    for task_id, task_examples in examples.items():
        row = task_index[task_id]
        for start in range(0, len(task_examples), batch_size):
            chunk = task_examples[start : start + batch_size]
            inputs = processor([e["image"] for e in chunk], bits_stored=[e.get("bits_stored") for e in chunk])
            output = model(inputs["pixel_values"].to(device), tasks=task_id, output_router_logits=True)
            for (index, moe), logits in zip(moe_modules(model), output.router_logits):
                gates, chosen = dense_gates(moe, logits)  # (B, N, E)
                gate_sums[index][row] += gates.sum(dim=(0, 1)).double().cpu()
                chosen_sums[index][row] += chosen.sum(dim=(0, 1)).double().cpu()
            tokens_per_image = output.router_logits[0].shape[1]
            token_counts[row] += output.router_logits[0].shape[0] * tokens_per_image
    counts = token_counts[:, None]  # 0/0 leaves NaN rows for tasks without images
    usage = {index: ((gate_sums[index] / counts).numpy(), (chosen_sums[index] / counts).numpy()) for index in gate_sums}
    return usage, tokens_per_image


def cosine_similarity(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    return unit @ unit.T


def held_out_examples(data: str, split: str, tasks: list[str], limit: int, image_size: int, seed: int = 0,
                      registry=None) -> dict[str, list[dict]]:
    """At most `limit` examples per task (evenly spaced) of a split of `--data` ("synthetic" or a folder)."""
    from .evaluate import examples_by_task

    if data == "synthetic":
        from .data.synthetic import SPLITS, SyntheticUltrasoundSuite, TRAIN_SIZES, VAL_FRACTION

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} of the synthetic suite; valid: {', '.join(SPLITS)}")
        known = [t for t in tasks if t in TRAIN_SIZES]
        if not known:
            raise ValueError(f"none of the model's tasks {tasks} is a task of the synthetic suite")
        # A suite just large enough that the smallest task has `limit` held-out examples.
        scale = limit / (VAL_FRACTION * min(TRAIN_SIZES[t] for t in known))
        suite = SyntheticUltrasoundSuite(scale=scale, image_size=image_size, seed=seed, tasks=known)
        source = suite.dataset(split)
    else:
        from .data.hf_folder import load_data

        if not os.path.exists(data):
            raise FileNotFoundError(f"--data {data!r}: no such folder (pass 'synthetic' or a data folder)")
        source = load_data(data, split=split, tasks=tasks, registry=registry)
    examples = examples_by_task(source, tasks, limit)
    if not examples:
        raise ValueError(f"split {split!r} of {data} holds no examples of the model's tasks {tasks}")
    return examples


def analyze_routing(model_dir: str, data: str | None = None, split: str = "val", max_images_per_task: int = 16,
                    output_dir: str | None = None, batch_size: int = 16, seed: int = 0, plots: bool = True) -> dict:
    """Measures the routing of a saved model, writes `routing.json` (and the heat maps) and returns the report."""
    if max_images_per_task < 1:
        raise ValueError(f"max_images_per_task must be >= 1, got {max_images_per_task}")
    # Bad input fails before the model loads.
    router_mode = read_model_config(model_dir).get("router_mode", "task")
    if router_mode == "token" and not data:
        raise ValueError("a 'token' router routes each token from the image: pass --data synthetic or a data folder")
    if router_mode == "token" and data == "synthetic":
        from .data.synthetic import SPLITS

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} of the synthetic suite; valid: {', '.join(SPLITS)}")
    model = load_backbone(model_dir)
    config = model.config
    report_data = None
    if config.router_mode == "task":
        usage = task_router_usage(model)
        method = "exact from router.task_logits (one routing decision per image; no images needed)"
        measured = list(config.task_ids)
    else:
        from modeling_m2dino import M2DinoImageProcessor

        processor = (M2DinoImageProcessor.from_pretrained(model_dir)
                     if os.path.isfile(os.path.join(model_dir, "preprocessor_config.json"))
                     else M2DinoImageProcessor.from_config(config))
        examples = held_out_examples(data, split, list(config.task_ids), max_images_per_task,
                                     processor.size["height"], seed, registry=config.task_specs)
        usage, tokens_per_image = token_router_usage(model, processor, examples, batch_size)
        method = "averaged over every token of held-out images"
        measured = [t for t in config.task_ids if t in examples]
        report_data = {"source": "synthetic" if data == "synthetic" else os.path.abspath(data), "split": split,
                       "images": {t: len(examples[t]) for t in measured}, "tokens_per_image": tokens_per_image}
    rows = [config.task_ids.index(t) for t in measured]

    layers = []
    for index in config.moe_layers:
        gates, chosen = usage[index][0][rows], usage[index][1][rows]
        layers.append({
            "layer": index,
            "gate_weight": {t: gates[i].tolist() for i, t in enumerate(measured)},
            "topk_frequency": {t: chosen[i].tolist() for i, t in enumerate(measured)},
            "similarity": cosine_similarity(gates).tolist(),
        })
    mean_similarity = np.mean([layer["similarity"] for layer in layers], axis=0)
    report = {
        "model": os.path.abspath(model_dir), "router_mode": config.router_mode, "method": method,
        "num_experts": config.num_experts, "top_k": config.num_experts_per_tok, "moe_layers": list(config.moe_layers),
        "tasks": measured, "missing_tasks": [t for t in config.task_ids if t not in measured], "data": report_data,
        "layers": layers, "similarity": mean_similarity.tolist(), "figures": [],
    }
    output_dir = output_dir or model_dir
    os.makedirs(output_dir, exist_ok=True)
    if plots:
        plot_expert_usage(report, os.path.join(output_dir, FIGURES[0]))
        plot_similarity(report, os.path.join(output_dir, FIGURES[1]))
        report["figures"] = list(FIGURES)
    with open(os.path.join(output_dir, "routing.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    # The folder's card shows the routing: refresh it, but only if this package wrote it.
    if os.path.abspath(output_dir) == os.path.abspath(model_dir):
        refresh_model_card(model_dir)
    return report


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def plot_expert_usage(report: dict, path: str) -> str:
    """One heat map per MoE layer: tasks (rows) x experts (columns), mean gate weight."""
    plt = _pyplot()
    tasks, layers = report["tasks"], report["layers"]
    columns = min(3, len(layers))
    rows = -(-len(layers) // columns)
    height = 0.6 + 0.28 * max(len(tasks), 3)
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 + 0.45 * report["num_experts"] * columns + 1.6, height * rows + 0.6),
                             squeeze=False, constrained_layout=True)
    image = None
    for axis, layer in zip(axes.flat, layers):
        matrix = np.array([layer["gate_weight"][t] for t in tasks])
        image = axis.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        axis.set_title(f"layer {layer['layer']}", fontsize=9)
        axis.set_xticks(range(report["num_experts"]))
        axis.set_xlabel("expert", fontsize=8)
        axis.set_yticks(range(len(tasks)))
        axis.set_yticklabels(tasks if axis in axes[:, 0] else [], fontsize=7)
        axis.tick_params(axis="x", labelsize=7)
    for axis in list(axes.flat)[len(layers):]:
        axis.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="mean gate weight")
    fig.suptitle(f"Expert usage per task ({report['router_mode']} router, top-{report['top_k']})", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_similarity(report: dict, path: str) -> str:
    """Task x task cosine similarity of the mean gate-weight vectors, averaged over the MoE layers."""
    plt = _pyplot()
    tasks, matrix = report["tasks"], np.array(report["similarity"])
    side = 1.5 + 0.32 * max(len(tasks), 3)
    fig, axis = plt.subplots(figsize=(side + 0.8, side), constrained_layout=True)
    image = axis.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma")
    axis.set_xticks(range(len(tasks)))
    axis.set_xticklabels(tasks, rotation=90, fontsize=7)
    axis.set_yticks(range(len(tasks)))
    axis.set_yticklabels(tasks, fontsize=7)
    if len(tasks) <= 12:
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                          color="black" if matrix[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=axis, shrink=0.8)
    axis.set_title("Routing similarity between tasks\n(cosine, mean over MoE layers)", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Per-task expert usage and task similarity of an M2DINO model's routers.")
    parser.add_argument("--model", required=True, help="saved M2DINO folder")
    parser.add_argument("--data", help="'synthetic' or a data folder (needed by a 'token' router; a 'task' router is read exactly)")
    parser.add_argument("--split", default="val", help="split of --data to route (default: val)")
    parser.add_argument("--max_images_per_task", type=int, default=16)
    parser.add_argument("--output_dir", help="where routing.json and the figures go (default: the model folder)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic suite")
    args = parser.parse_args(argv)
    try:
        report = analyze_routing(args.model, args.data, args.split, args.max_images_per_task, args.output_dir,
                                 args.batch_size, args.seed)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"m2dino-routing: {error}") from None
    if args.data and report["router_mode"] == "task":
        print("note: a 'task' router's routing is exact from its logits; --data was not needed and not used")
    print(f"{report['method']}; layers {report['moe_layers']}; wrote routing.json to {args.output_dir or args.model}")
    tasks, similarity = report["tasks"], np.array(report["similarity"])
    pairs = sorted(((similarity[i, j], tasks[i], tasks[j]) for i in range(len(tasks)) for j in range(i + 1, len(tasks))),
                   reverse=True)
    for value, a, b in pairs[:5]:
        print(f"  {a} ~ {b}: {value:.3f}")
    return report


if __name__ == "__main__":
    main()
