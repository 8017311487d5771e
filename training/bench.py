"""m2dino-bench: what the task-conditioned MoE costs, measured against the dense DINOv3 ViT of the same size.

Four figures, each on one command's device and dtype, written as a table and as JSON (`--output`):

1. MoE overhead. One training step (forward + backward) of the M2DINO backbone (`M2DinoModel`) on a mixed-task
   batch (image i has task i mod 27), loss = mean square of the final normalised tokens plus the router
   auxiliary loss, against the same step of `transformers.DINOv3ViTModel` (same widths, depth, registers and
   image size; loss = mean square of its final tokens). Runs are interleaved and each figure is a median.
   The measured time ratio is set beside the ratio of analytic matmul FLOPs (`forward_matmul_flops`): top-k
   routing multiplies the MoE layers' MLP FLOPs by k and adds the router; nothing else changes.
2. Utilisation. A step's analytic FLOPs (3x the forward matmul FLOPs for forward + backward) per second, over
   the matmul peak that the same run measures (the best of a few large square matmuls per round, median over
   rounds, in the same dtype on the same device).
3. All-task inference. `M2DinoForMultiTask.predict_all_tasks` (one batch, every task) against one forward call
   per task, with the largest difference between the two answers.
4. Memory. Peak tensor memory one training step adds (activations, gradients and temporaries, not the
   weights), with and without `activation_checkpointing_enable()`: on CUDA `torch.cuda.max_memory_allocated`
   over the memory allocated before the step; on CPU the peak of the profiler's timeline of tensor
   allocations and frees (`step_peak_bytes`).

Also (not with `--quick`): `torch.compile` of the backbone in "task" router mode, whether dynamo traced it
without graph breaks (`torch._dynamo.explain`) and the step-time gain over eager.

    m2dino-bench --preset small --image_size 224 --batch_size 8 --repeats 5
    m2dino-bench --quick --output /tmp/bench.json      # seconds, for the tests
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time

import torch
import transformers
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from modeling_m2dino import M2DinoConfig, M2DinoForMultiTask, M2DinoModel
from modeling_m2dino.moe import router_loss

ROUTER_MODES = ("task", "token")
# The dense model copies these from the M2DINO config, so both have the same backbone shape.
BACKBONE_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_register_tokens",
    "patch_size", "num_channels", "image_size", "use_gated_mlp", "hidden_act", "layer_norm_eps", "layerscale_value",
)
# The targets for the reference run (small preset, 224 px, fp32, this 2-core CPU).
TARGETS = {
    "moe_overhead_task": ("measured / FLOP ratio, task router", "<=", 1.05),
    "moe_overhead_token": ("measured / FLOP ratio, token router", "<=", 1.15),
    "utilisation_task": ("utilisation, task router", ">=", 0.60),
    "all_task_inference": ("all-task / separate time", "<=", 0.60),
    "all_task_max_diff": ("all-task max |difference|", "<=", 1e-5),
    "checkpointing_saving": ("memory saved by checkpointing", ">=", 0.40),
}


# ----------------------------------------------------------------------------------------------------- FLOPs


def log(message: str):
    print(f"[m2dino-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def forward_matmul_flops(config: M2DinoConfig, image_size: int, moe: bool) -> dict:
    """Forward matmul FLOPs (2 per multiply-add) for one image, by part.

    Counted: the patch-embedding convolution, the q/k/v/o projections, the two attention products (q k^T and
    attention x v), the MLP (or, in MoE layers, top_k expert MLPs) and the router's gate. Not counted: norms,
    activations, softmax, RoPE, residuals and the MoE's gathers (all linear in the tokens and small).
    """
    channels, width, inner = config.num_channels, config.hidden_size, config.intermediate_size
    patches = (image_size // config.patch_size) ** 2
    tokens = 1 + config.num_register_tokens + patches
    mlp = (3 if config.use_gated_mlp else 2) * 2 * tokens * width * inner
    counts = {
        "patch_embedding": 2 * patches * channels * config.patch_size**2 * width,
        "attention_projections": config.num_hidden_layers * 4 * 2 * tokens * width * width,
        "attention_products": config.num_hidden_layers * 2 * 2 * tokens * tokens * width,
        "mlp": config.num_hidden_layers * mlp,
        "router": 0,
    }
    if moe:
        num_moe = len(config.moe_layers)
        counts["mlp"] += num_moe * (config.num_experts_per_tok - 1) * mlp
        if config.router_mode == "token":  # gate(x) per token, plus gate(task embedding) once per image
            counts["router"] = num_moe * 2 * (tokens + 1) * width * config.num_experts
    counts["total"] = sum(counts.values())
    return counts


# ---------------------------------------------------------------------------------------------- the models


def m2dino_config(args, router_mode: str) -> M2DinoConfig:
    config = M2DinoConfig.from_preset(args.preset, image_size=args.image_size, router_mode=router_mode)
    config._attn_implementation = "sdpa"
    return config


def backbone(args, setup, router_mode: str) -> M2DinoModel:
    """The M2DINO backbone every training figure measures, with the same initial weights each time."""
    torch.manual_seed(0)
    return M2DinoModel(m2dino_config(args, router_mode)).to(setup.device).train()


def dense_config(config: M2DinoConfig) -> DINOv3ViTConfig:
    # pos_embed_rescale=None: M2DINO's default, so that neither model jitters RoPE in train mode.
    dense = DINOv3ViTConfig(**{name: getattr(config, name) for name in BACKBONE_FIELDS}, pos_embed_rescale=None)
    dense._attn_implementation = "sdpa"
    return dense


def mixed_task_ids(batch_size: int, num_tasks: int, device) -> torch.Tensor:
    """Image i gets task i mod num_tasks: as many different tasks in the batch as it can hold."""
    return torch.arange(batch_size, device=device) % num_tasks


class Setup:
    """Device, dtype and batch shared by every figure."""

    def __init__(self, args):
        self.device = torch.device(args.device)
        self.dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        generator = torch.Generator().manual_seed(0)
        size = (args.batch_size, 3, args.image_size, args.image_size)
        self.pixel_values = torch.randn(size, generator=generator).to(self.device)

    def autocast(self):
        """bf16 runs as autocast mixed precision (fp32 weights, bf16 matmuls), the way one trains in bf16."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def training_step(model, setup: Setup, task_ids=None):
    """Forward + backward; returns the loss. `task_ids` None means the dense DINOv3 model."""
    model.zero_grad(set_to_none=True)
    with setup.autocast():
        if task_ids is None:
            output = model(setup.pixel_values)
            loss = output.last_hidden_state.float().pow(2).mean()
        else:
            output = model(setup.pixel_values, task_ids=task_ids, output_router_logits=True)
            loss = output.last_hidden_state.float().pow(2).mean() + router_loss(output.router_logits, model.config)
    loss.backward()
    return loss.detach()


def timed(function, setup: Setup) -> float:
    setup.synchronize()
    start = time.perf_counter()
    function()
    setup.synchronize()
    return time.perf_counter() - start


def matmul_rate(setup: Setup, size: int, tries: int = 3) -> float:
    """FLOP/s of the best of `tries` (size x size) @ (size x size) products in the run's dtype."""
    a = torch.randn(size, size, device=setup.device).to(setup.dtype)
    b = torch.randn(size, size, device=setup.device).to(setup.dtype)
    best = min(timed(lambda: a @ b, setup) for _ in range(tries))
    return 2 * size**3 / best


def interleaved_medians(runners: dict, setup: Setup, repeats: int, peak_size: int, warm_up: bool = True):
    """Median seconds of each runner over `repeats` rounds that run each once in turn, and the matmul rate
    measured in every round, so that load on the machine hits all of them alike. Returns (medians, rates)."""
    if warm_up:
        for run in runners.values():
            run()
    matmul_rate(setup, peak_size, tries=1)
    times, peaks = {name: [] for name in runners}, []
    for _ in range(repeats):
        for name, run in runners.items():
            times[name].append(timed(run, setup))
        peaks.append(matmul_rate(setup, peak_size))
    return {name: statistics.median(values) for name, values in times.items()}, peaks


# ------------------------------------------------------------------------------------------------- figures


def bench_training(args, setup: Setup) -> dict:
    """Figures 1 and 2: MoE overhead against dense DINOv3, and utilisation of the matmul peak."""
    models, runners = {}, {}
    for mode in ROUTER_MODES:
        models[mode] = backbone(args, setup, mode)
    torch.manual_seed(0)
    dense = DINOv3ViTModel(dense_config(models["task"].config)).to(setup.device).train()
    num_tasks = len(models["task"].config.tasks)
    task_ids = mixed_task_ids(args.batch_size, num_tasks, setup.device)
    runners["dense"] = lambda: training_step(dense, setup)
    for mode in ROUTER_MODES:
        runners[mode] = lambda model=models[mode]: training_step(model, setup, task_ids)
    medians, peaks = interleaved_medians(runners, setup, args.repeats, args.peak_size)
    peak = statistics.median(peaks)

    dense_flops = forward_matmul_flops(models["task"].config, args.image_size, moe=False)
    result = {
        "loss": "mean square of the final normalised tokens (+ router aux loss for M2DINO), backbone only, no heads",
        "batch": f"{args.batch_size} images, task of image i = i mod {num_tasks}",
        "flops_counted": forward_matmul_flops.__doc__.split("\n\n")[1].strip().replace("\n    ", " "),
        "dense_forward_flops_per_image": dense_flops,
        "dense_step_s": medians["dense"],
        "matmul_peak_flops_per_s": peak,
        "matmul_peak_rounds": peaks,
        "matmul_peak_size": args.peak_size,
        "dense_utilisation": 3 * dense_flops["total"] * args.batch_size / medians["dense"] / peak,
        "modes": {},
    }
    for mode in ROUTER_MODES:
        flops = forward_matmul_flops(models[mode].config, args.image_size, moe=True)
        flop_ratio = flops["total"] / dense_flops["total"]
        measured = medians[mode] / medians["dense"]
        result["modes"][mode] = {
            "forward_flops_per_image": flops,
            "step_s": medians[mode],
            "measured_ratio": measured,
            "flop_ratio": flop_ratio,
            "measured_over_flop_ratio": measured / flop_ratio,
            "utilisation": 3 * flops["total"] * args.batch_size / medians[mode] / peak,
            "experts_used_per_moe_layer": experts_used(models[mode], setup, task_ids),
        }
    return result


@torch.no_grad()
def experts_used(model: M2DinoModel, setup: Setup, task_ids) -> list[int]:
    """How many experts the batch's routing sends work to, per MoE layer (context for the overhead)."""
    with setup.autocast():
        logits = model(setup.pixel_values, task_ids=task_ids, output_router_logits=True).router_logits
    top_k = model.config.num_experts_per_tok
    return [int(torch.unique(layer_logits.topk(top_k, dim=-1).indices).numel()) for layer_logits in logits]


def largest_difference(together: dict, separate: dict) -> float:
    """Max |a - b| over every tensor field of every task's output."""
    largest = 0.0
    for task, output in together.items():
        for field, value in output.items():
            if torch.is_tensor(value):
                other = separate[task][field]
                largest = max(largest, (value.float() - other.float()).abs().max().item())
    return largest


def bench_all_tasks(args, setup: Setup) -> dict:
    """Figure 3: one batch answered for every task at once, against one forward call per task."""
    result = {"batch_size": args.batch_size, "modes": {}}
    for mode in ROUTER_MODES:
        torch.manual_seed(0)
        model = M2DinoForMultiTask(m2dino_config(args, mode)).to(setup.device).eval()
        tasks = model.served_tasks
        pixel_values = setup.pixel_values

        @torch.no_grad()
        def separate():
            with setup.autocast():
                return {task: model(pixel_values, tasks=task).task_outputs[task] for task in tasks}

        def together():
            with setup.autocast():
                return model.predict_all_tasks(pixel_values)

        difference = largest_difference(together(), separate())  # also the warm-up of both
        medians, _ = interleaved_medians({"together": together, "separate": separate}, setup, args.repeats, 64, warm_up=False)
        result["modes"][mode] = {
            "tasks": len(tasks),
            "together_s": medians["together"],
            "separate_s": medians["separate"],
            "ratio": medians["together"] / medians["separate"],
            "max_abs_difference": difference,
        }
        gc.collect()
    return result


def step_peak_bytes(model, setup: Setup, task_ids) -> int:
    """Peak of the tensor memory one training step adds over what was allocated before it: activations,
    gradients and temporaries, not the weights. CUDA: the allocator's own peak counter. CPU has no such
    counter (and the process's resident set mixes in glibc's arenas and free lists, which made run-to-run
    figures differ by tens of percent), so the step runs under the profiler's memory tracking and the peak is
    taken over its timeline of tensor allocations and frees."""
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)
        torch.cuda.reset_peak_memory_stats(setup.device)
        before = torch.cuda.memory_allocated(setup.device)
        training_step(model, setup, task_ids)
        torch.cuda.synchronize(setup.device)
        return torch.cuda.max_memory_allocated(setup.device) - before
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        training_step(model, setup, task_ids)
    # `_memory_profile()` is the analysis behind the profiler's (deprecated) `export_memory_timeline`; torch is pinned.
    live = peak = 0
    for _, action, (key, _), size in sorted(prof._memory_profile().timeline, key=lambda event: event[0]):
        if key.device.type != "cpu":
            continue
        if action.name == "CREATE":
            live += size
        elif action.name == "DESTROY":
            live -= size
        peak = max(peak, live)
    return peak


def bench_memory(args, setup: Setup) -> dict:
    """Figure 4: the same step's peak memory without and with activation checkpointing."""
    result = {
        "method": (
            "torch.cuda.max_memory_allocated minus memory allocated before the step"
            if setup.device.type == "cuda"
            else "torch profiler memory timeline (tensor allocations and frees during the step): peak of the live bytes "
            "the step added; counts activations, gradients and temporaries, not the weights"
        ),
        "model": "M2DinoModel, task router, mixed-task batch, same loss as the overhead figure",
    }
    for variant in ("plain", "checkpointing"):
        model = backbone(args, setup, "task")
        if variant == "checkpointing":
            model.activation_checkpointing_enable()
        task_ids = mixed_task_ids(args.batch_size, len(model.config.tasks), setup.device)
        result[variant] = {"step_peak_bytes": step_peak_bytes(model, setup, task_ids)}
        del model
        gc.collect()
    plain, checkpointed = result["plain"]["step_peak_bytes"], result["checkpointing"]["step_peak_bytes"]
    result["ratio"] = checkpointed / plain
    result["saving"] = 1 - checkpointed / plain
    return result


def bench_compile(args, setup: Setup) -> dict:
    """torch.compile of the backbone in "task" router mode: graph breaks, compile time and the gain over eager."""
    import torch._dynamo

    # The MoE turns its per-expert token counts into Python ints (`.tolist()`); this lets dynamo keep them
    # symbolic inside the graph instead of breaking it there.
    torch._dynamo.config.capture_scalar_outputs = True
    torch._dynamo.reset()
    model = backbone(args, setup, "task")
    task_ids = mixed_task_ids(args.batch_size, len(model.config.tasks), setup.device)
    explanation = torch._dynamo.explain(model)(setup.pixel_values, task_ids=task_ids)
    breaks = []
    for reason in explanation.break_reasons:
        frame = reason.user_stack[-1] if reason.user_stack else None
        where = f"{os.path.relpath(frame.filename)}:{frame.lineno} ({frame.name})" if frame else "?"
        breaks.append({"where": where, "reason": reason.reason.strip().splitlines()[0][:200]})
    torch._dynamo.reset()
    compiled = torch.compile(model)
    start = time.perf_counter()
    compiled_loss = training_step(compiled, setup, task_ids)
    compile_s = time.perf_counter() - start
    eager_loss = training_step(model, setup, task_ids)
    medians, _ = interleaved_medians(
        {"eager": lambda: training_step(model, setup, task_ids), "compiled": lambda: training_step(compiled, setup, task_ids)},
        setup, args.repeats, args.peak_size,
    )
    return {
        "router_mode": "task",
        "graph_count": explanation.graph_count,
        "graph_break_count": explanation.graph_break_count,
        "graph_breaks": breaks,
        "moe_graph_breaks": sum("moe.py" in b["where"] for b in breaks),
        "first_step_s_including_compile": compile_s,
        "eager_step_s": medians["eager"],
        "compiled_step_s": medians["compiled"],
        "speedup": medians["eager"] / medians["compiled"],
        "loss_difference": abs(compiled_loss.item() - eager_loss.item()),
    }


# ------------------------------------------------------------------------------------------------- report


def machine_info(args) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
            cpu = names[0] if names else cpu
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
    }
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def target_checks(results: dict) -> dict:
    """Each target's value and whether it is met (the targets were set for the small/224/fp32/CPU run)."""
    training, memory = results["training"], results["memory"]
    values = {
        "moe_overhead_task": training["modes"]["task"]["measured_over_flop_ratio"],
        "moe_overhead_token": training["modes"]["token"]["measured_over_flop_ratio"],
        "utilisation_task": training["modes"]["task"]["utilisation"],
        "all_task_inference": max(m["ratio"] for m in results["all_task_inference"]["modes"].values()),
        "all_task_max_diff": max(m["max_abs_difference"] for m in results["all_task_inference"]["modes"].values()),
        "checkpointing_saving": memory["saving"],
    }
    checks = {}
    for key, (label, sense, limit) in TARGETS.items():
        met = values[key] <= limit if sense == "<=" else values[key] >= limit
        checks[key] = {"figure": label, "value": values[key], "target": f"{sense} {limit:g}", "met": bool(met)}
    return checks


def table(results: dict) -> str:
    """The results as a Markdown table (readable in a terminal too)."""
    training, inference, memory = results["training"], results["all_task_inference"], results["memory"]
    mib = 2.0**20

    def target(key):
        return results["targets"][key]["target"] if key in results["targets"] else ""

    rows = [("Matmul peak (square %d, median of rounds)" % training["matmul_peak_size"],
             f"{training['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s", "")]
    rows.append(("Dense DINOv3 training step", f"{training['dense_step_s']:.3f} s", ""))
    rows.append(("Dense DINOv3 utilisation", f"{training['dense_utilisation']:.1%}", ""))
    for mode, figures in training["modes"].items():
        rows += [
            (f"M2DINO training step ({mode} router)", f"{figures['step_s']:.3f} s", ""),
            (f"  measured time ratio / FLOP ratio ({mode})",
             f"{figures['measured_ratio']:.3f} / {figures['flop_ratio']:.3f} = {figures['measured_over_flop_ratio']:.3f}",
             target(f"moe_overhead_{mode}")),
            (f"  utilisation ({mode})", f"{figures['utilisation']:.1%}", target(f"utilisation_{mode}")),
        ]
    for mode, figures in inference["modes"].items():
        rows += [
            (f"All-task inference, {figures['tasks']} tasks ({mode} router)",
             f"{figures['together_s']:.3f} s vs {figures['separate_s']:.3f} s = {figures['ratio']:.3f}",
             target("all_task_inference")),
            (f"  largest difference ({mode})", f"{figures['max_abs_difference']:.2e}", target("all_task_max_diff")),
        ]
    rows.append(("Step memory without / with checkpointing",
                 f"{memory['plain']['step_peak_bytes'] / mib:.0f} MiB / {memory['checkpointing']['step_peak_bytes'] / mib:.0f} MiB"
                 f" (saves {memory['saving']:.1%})", target("checkpointing_saving")))
    compiled = results["compile"]
    if compiled.get("skipped"):
        rows.append(("torch.compile (task router)", "skipped (--quick)", ""))
    else:
        rows.append(("torch.compile (task router): graph breaks",
                     f"{compiled['graph_break_count']} ({compiled['moe_graph_breaks']} in moe.py)", "0"))
        rows.append(("  eager / compiled step", f"{compiled['eager_step_s']:.3f} s / {compiled['compiled_step_s']:.3f} s"
                     f" = {compiled['speedup']:.2f}x", ""))
    width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    lines = [f"| {'Figure'.ljust(width[0])} | {'Value'.ljust(width[1])} | Target |",
             f"|{'-' * (width[0] + 2)}|{'-' * (width[1] + 2)}|--------|"]
    lines += [f"| {a.ljust(width[0])} | {b.ljust(width[1])} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Benchmark M2DINO's MoE against dense DINOv3: overhead, "
                                     "utilisation, all-task inference, activation-checkpointing memory.")
    parser.add_argument("--preset", default="small", help="M2DINO size preset (small, base, tiny)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per figure (default 5, --quick 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny preset, 32 px, batch 4, one thread, one round, small matmul, no compilation: seconds")
    parser.add_argument("--output", default="bench_results.json", help="JSON file for every figure")
    args = parser.parse_args(argv)
    if args.quick:
        explicit = set(a.split("=")[0].lstrip("-") for a in (argv if argv is not None else sys.argv[1:]))
        for name, value in dict(preset="tiny", image_size=32, batch_size=4).items():
            if name not in explicit:
                setattr(args, name, value)
    if args.quick and args.threads is None:
        args.threads = 1  # a loaded 2-core machine stalls 2-thread OpenMP regions; tests want seconds
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    args.peak_size = 256 if args.quick else 2048
    if args.image_size % 16:
        parser.error("--image_size must be a multiple of the patch size, 16")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def main(argv=None):
    """`m2dino-bench`: the command line's arguments to `run_benchmarks`; prints the table, writes `--output`."""
    args = parse_args(argv)
    command = "m2dino-bench " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run_benchmarks(args, command)
    print(results["table"])
    met = [t["figure"] for t in results["targets"].values() if t["met"]]
    unmet = [t["figure"] for t in results["targets"].values() if not t["met"]]
    print(f"\ntargets met: {', '.join(met) or 'none'}\ntargets not met: {', '.join(unmet) or 'none'}")
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2, default=str)
    print(f"wrote {args.output}")
    return results


def run_benchmarks(args, command: str = "") -> dict:
    """Every figure for the settings `parse_args` gives (`command` is recorded with them), the targets met
    and the table, as a dict."""
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"command": command, "machine": machine_info(args), "settings": {
        k: getattr(args, k) for k in ("preset", "image_size", "batch_size", "device", "dtype", "repeats", "quick")}}
    setup = Setup(args)
    log(f"training steps: M2DINO (task and token routers) and dense DINOv3, {args.repeats} interleaved rounds")
    results["training"] = bench_training(args, setup)
    gc.collect()
    log("all-task inference against one call per task")
    results["all_task_inference"] = bench_all_tasks(args, setup)
    log("memory with and without activation checkpointing")
    results["memory"] = bench_memory(args, setup)
    if not args.quick:
        log("torch.compile, task router: explain, compile, time")
    results["compile"] = {"skipped": True, "why": "--quick"} if args.quick else bench_compile(args, setup)
    results["targets"] = target_checks(results)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["table"] = table(results)
    return results


if __name__ == "__main__":
    main()
