"""New tasks for a trained M2DINO: a task the registry lacks, declared in a small JSON file, is added to a model
(one router entry per MoE layer and a head) without any existing weight changing.

A task file holds one task, or a list of them, with the fields of `TaskSpec`:

    {"id": "kidney_stone_cls", "type": "classification", "labels": ["no_stone", "stone"], "group": "abdomen"}

`id`, `type`, `labels` (class names, background first for segmentation; landmark names for regression) and `group`
are required; `num_classes` / `num_points` may be given and must then agree with the labels.
"""

import json

import torch
from torch import nn

from modeling_m2dino import TASK_TYPES, TaskSpec
from modeling_m2dino.moe import M2DinoTaskRouter

from .task_types import fit_heads

REQUIRED_FIELDS = ("id", "type", "labels", "group")
ROUTER_INITS = ("mean", "random")


def read_task_file(path: str, existing_ids=()) -> list[TaskSpec]:
    """The task(s) declared in a JSON file, checked: every required field present, ids new and unique."""
    with open(path, encoding="utf-8") as f:
        try:
            entries = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    entries = entries if isinstance(entries, list) else [entries]
    specs = []
    for position, entry in enumerate(entries):
        where = f"{path}, task {position + 1}" if len(entries) > 1 else path
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: a task is a JSON object with fields {list(REQUIRED_FIELDS)}, got {entry!r}")
        missing = [name for name in REQUIRED_FIELDS if name not in entry]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}; a new task needs {list(REQUIRED_FIELDS)}")
        entry = dict(entry)
        count_field = TASK_TYPES[entry["type"]].count_field if entry["type"] in TASK_TYPES else None
        if isinstance(entry["labels"], list) and count_field:  # the names fix the count unless it is given
            entry.setdefault(count_field, len(entry["labels"]))
        try:
            spec = TaskSpec.from_dict(entry)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
        taken = list(existing_ids) + [s.id for s in specs]
        if spec.id in taken:
            raise ValueError(f"{where}: task id {spec.id!r} already exists; ids in use: {', '.join(taken)}")
        specs.append(spec)
    if not specs:
        raise ValueError(f"{path} declares no task")
    return specs


def add_task(model, spec: TaskSpec, router_init: str = "mean", train_examples: list[dict] | None = None) -> int:
    """Adds `spec` to an M2DINO model in place and returns its task index.

    Every router table (`task_logits` in "task" mode, `task_embedding` in "token" mode) grows by one row, the
    mean of the existing rows (`router_init="mean"`: the new task starts on the experts the tasks use on
    average) or small random values (`"random"`); the task gets a freshly initialised head, fitted to
    `train_examples` (the task's training examples) as `m2dino-train` fits a new head when its type keeps
    statistics of its labels (a measurement's mean and standard deviation). Existing weights stay bit-identical,
    so the other tasks' outputs do not change. Add tasks before wrapping a model with PEFT.
    """
    if hasattr(model, "peft_config"):
        raise TypeError("add_task changes the model's shapes: add tasks before wrapping the model with PEFT")
    if router_init not in ROUTER_INITS:
        raise ValueError(f"unknown router_init {router_init!r}; valid: {', '.join(ROUTER_INITS)}")
    config = model.config
    if spec.id in config.task_ids:
        raise ValueError(f"task {spec.id!r} already exists; this model's tasks: {', '.join(config.task_ids)}")
    backbone = model.get_base_model()
    index = len(config.task_ids)
    for router in backbone.modules():
        if isinstance(router, M2DinoTaskRouter):
            name = "task_logits" if router.mode == "task" else "task_embedding"
            _append_row(router, name, router_init, config.initializer_range)
    config.tasks = config.tasks + [spec.to_dict()]
    backbone.task_index[spec.id] = index
    if hasattr(model, "heads") and model.task_type in (None, spec.type):
        head = TASK_TYPES[spec.type].head_class(config, spec)
        for module in head.modules():
            model._init_weights(module)
        reference = next(model.parameters())
        model.heads[spec.id] = head.to(device=reference.device, dtype=reference.dtype)
        if train_examples is not None:
            fit_heads(model, [spec], {spec.id: train_examples})
    return index


@torch.no_grad()
def _append_row(module: nn.Module, name: str, init: str, std: float):
    table = getattr(module, name)
    if init == "mean":
        row = table.mean(dim=0, keepdim=True)
    else:
        row = torch.randn_like(table[:1]) * std
    setattr(module, name, nn.Parameter(torch.cat([table, row]), requires_grad=table.requires_grad))


def train_task_routing(model, task_id: str) -> list:
    """Makes one task's router entries trainable and nothing else of the routers.

    Every trainable router (the model's own, or PEFT's per-adapter copies under `modules_to_save`; never
    PEFT's `original_module`) gets its table unfrozen with a gradient hook that zeroes the rows of every other
    task, and its token-mode gate (shared by all tasks) frozen. Keep router tables out of weight decay too:
    decay would shrink the other rows although their gradient is zero. Returns the hook handles.
    """
    index = model.config.task_ids.index(task_id)
    handles = []
    for name, router in model.named_modules():
        if not isinstance(router, M2DinoTaskRouter) or ".original_module" in f".{name}":
            continue
        table = router.task_logits if router.mode == "task" else router.task_embedding
        table.requires_grad_(True)
        mask = torch.zeros(table.shape[0], 1, dtype=table.dtype, device=table.device)
        mask[index] = 1
        handles.append(table.register_hook(lambda grad, mask=mask: grad * mask))
        if router.mode == "token":
            router.gate.requires_grad_(False)
    if not handles:
        raise ValueError("the model has no router to train")
    return handles


__all__ = ["REQUIRED_FIELDS", "ROUTER_INITS", "add_task", "read_task_file", "train_task_routing"]
