"""`m2dino-advise`: which tasks should train together, from one short probe run of all of them.

    m2dino-advise --data synthetic --tasks breast_2cls breast_3cls breast_lesion lung lung_2cls --output_dir advice
    m2dino-train --paradigm cg --groups advice/advised_groups.json ...

The probe trains one all-task (AU) model for a few hundred steps of the tiny preset with the project's
`MultiTaskTrainer`, and every `lookahead_every` steps measures task-to-task affinity by the lookahead of TAG
(Fifty et al. 2021, "Efficiently Identifying Task Groupings for Multi-Task Learning"): from the current shared
parameters (the whole encoder, experts and routers included; heads are task-specific and stay put), take the
update that task i's loss alone would make and measure, on a fixed batch of every task j,

    affinity[i][j] = 1 - L_j(shared after task i's update) / L_j(shared now)

positive when a step on task i lowers task j's loss. The update is task i's share of the probe optimizer's next
AdamW step: its gradient's share of the bias-corrected first moment over the root of the second moment, at a
tenth of the probe's peak learning rate (`lookahead_step_scale`), where the measurement is linear in the step
(at the full rate some tasks' own steps overshoot and raise their own loss). The momentum carried from earlier steps is common to all tasks and left out: it
would add the same drift to every row. Losses are taken in eval mode so that no
random augmentation of the model (DINOv3's RoPE rescaling) enters the ratio. Beside it the probe reports the
routers' task similarity (cosine of the tasks' mean expert-gate vectors, averaged over the MoE layers, as
`m2dino-routing` computes it) and each task's data scale (`n_train`).

The grouping rule (`propose_groups`) edits a starting grouping, the clinical groups (`--start_from clinical`,
the default) or every task alone (`singletons`), only where the probe's evidence is significant: a short probe's
affinities are noisy, and a grouping built on their signs alone followed the noise (in the default study it
paired FUGC with breast_lesion rather than fetal_head, and fell behind clinical grouping, docs/experiment.md).
1. Affinities are put on one scale per affected task: `relative[i][j] = affinity[i][j] / affinity[j][j]`, the
   share of task j's own-step improvement that a step on task i brings (1: as good as training j itself). A
   task whose own step does not lower its loss over the probe (`affinity[j][j] <= 0`) cannot be scored: its
   column is neutral (0) and it is listed under `unscored_tasks`.
2. Mutual affinity `mutual[i][j] = (relative[i][j] + relative[j][i]) / 2`, per lookahead step; its mean and
   standard error over the measurements are the evidence.
3. Split: while some member's mean mutual affinity with the rest of its group is significantly negative (mean
   + `noise_z` standard errors below 0), the most negative one leaves and stands alone.
4. Merge: repeatedly merge the two groups whose mean mutual affinity is significantly positive (mean -
   `noise_z` standard errors above 0), the largest first, if in the merged group every member's mean mutual
   affinity with the others stays positive; stop when no merge qualifies. Ties go to the pair listed first.
5. Data-poor tasks left alone (n_train below `data_poor_fraction` x the median n_train of the probed tasks)
   join the group with the most training data among those whose mean mutual affinity with them is not
   significantly negative (mean + `noise_z` standard errors over the lookahead steps >= 0): small tasks gain
   most from shared data, and the paper finds the larger all-task pools steadier for them than clinical groups.
   A data-poor task with significantly negative affinity to every group stays alone.

Writes into `--output_dir`: `advised_groups.json` (the `--groups` file of `m2dino-train` and
`m2dino-experiment`: group name -> task ids), `advice.json` (every figure: affinities with their standard
errors, relative and mutual affinities, routing similarity, n_train, the groups and why, the probe's settings
and cost in seconds) and `affinity.png` (heat maps of the affinity and the routing similarity).
"""

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from transformers import TrainerCallback, set_seed

from modeling_m2dino import EXTRA_TASKS, FMC_UIA_TASKS, M2DinoConfig, M2DinoImageProcessor

from .data.collate import ProcessedExamples, collate, task_list

GROUPS_FILE = "advised_groups.json"
REPORT_FILE = "advice.json"
FIGURE_FILE = "affinity.png"


START_FROM = ("clinical", "singletons")


@dataclass
class ProbeSettings:
    """How the probe trains and measures (the keyword arguments `advise` takes besides data, tasks and seed)."""

    probe_steps: int = 200  # training steps of the probe's all-task model
    lookahead_every: int = 20  # measure the affinity every this many steps
    lookahead_batch_size: int = 16  # examples per task in the fixed batch each measurement uses
    batch_size: int = 32  # training batch (mixed tasks)
    learning_rate: float = 1e-3  # peak learning rate of the probe
    lookahead_step_scale: float = 0.1  # the lookahead's step: this x learning_rate (small enough to be linear)
    preset: str = "tiny"
    image_size: int | None = None  # default: the preset's
    router_mode: str | None = None
    num_experts: int | None = None
    top_k: int | None = None
    synthetic_scale: float = 1.0
    task_weighting: str = "temperature"
    augment: bool = True
    dataloader_num_workers: int = 0
    data_poor_fraction: float = 0.5  # data-poor: n_train < this x the median n_train of the probed tasks
    noise_z: float = 2.0  # standard errors a mean affinity must clear to count (positive or negative)
    start_from: str = "clinical"  # the grouping the probe's evidence edits: "clinical" groups or "singletons"

    def __post_init__(self):
        for name in ("probe_steps", "lookahead_every", "lookahead_batch_size", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"probe setting {name} must be >= 1, got {getattr(self, name)!r}")
        if self.lookahead_every > self.probe_steps:
            raise ValueError(f"lookahead_every ({self.lookahead_every}) exceeds probe_steps ({self.probe_steps}): "
                             "the probe would measure nothing")
        if self.start_from not in START_FROM:
            raise ValueError(f"probe setting start_from must be one of {', '.join(START_FROM)}, got {self.start_from!r}")
        for name in ("learning_rate", "lookahead_step_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"probe setting {name} must be > 0, got {getattr(self, name)!r}")


def shared_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The parameters every task's loss reaches, by name: the encoder's (patch embedding, layers, experts, routers)."""
    return {name: p for name, p in model.named_parameters() if name.startswith("m2dino.") and p.requires_grad}


def lookahead_affinity(model, batch: dict, task_ids: list[str], step_size: float, second_moments=None) -> np.ndarray:
    """One lookahead measurement on a collated batch that holds examples of every task of `task_ids`.

    Returns the (T, T) matrix `1 - L_j(after task i's update) / L_j(before)` (row: the task stepped on, column:
    the task whose loss is measured). `second_moments` maps a shared parameter to `(exp_avg_sq, step, betas,
    eps)` of an Adam optimizer (see `adam_direction`); a parameter without them takes Adam's first step,
    `step_size * sign(grad)`.
    The updated parameters are passed functionally (`torch.func.functional_call`): the model is never modified.
    """
    was_training = model.training
    model.eval()
    shared = shared_parameters(model)
    second_moments = second_moments or {}
    inputs = {"pixel_values": batch["pixel_values"], "tasks": batch["tasks"], "labels": batch["labels"]}
    try:
        losses = model(**inputs).task_losses
        missing = [t for t in task_ids if t not in losses]
        if missing:
            raise ValueError(f"the lookahead batch holds no examples of task(s) {missing}")
        before = torch.stack([losses[t].detach() for t in task_ids])
        affinity = np.zeros((len(task_ids), len(task_ids)))
        for i, task in enumerate(task_ids):
            grads = torch.autograd.grad(losses[task], list(shared.values()), retain_graph=i < len(task_ids) - 1,
                                        allow_unused=True)
            with torch.no_grad():
                updated = {name: parameter - step_size * adam_direction(grad, second_moments.get(parameter))
                           for (name, parameter), grad in zip(shared.items(), grads) if grad is not None}
                after = torch.func.functional_call(model, updated, args=(), kwargs=inputs).task_losses
                affinity[i] = (1 - torch.stack([after[t] for t in task_ids]) / before).double().cpu().numpy()
    finally:
        model.train(was_training)
    return affinity


def adam_direction(grad: torch.Tensor, moments) -> torch.Tensor:
    """The part of Adam's next update (per unit learning rate) that `grad` contributes: its share of the
    bias-corrected first moment, over the root of the bias-corrected second moment the optimizer would hold
    after it. Without optimizer state that is Adam's first step, the gradient's sign."""
    if moments is None:
        return grad.sign()
    exp_avg_sq, step, betas, eps = moments
    beta1, beta2 = betas
    share = (1 - beta1) / (1 - beta1 ** (step + 1))
    second = (beta2 * exp_avg_sq + (1 - beta2) * grad * grad) / (1 - beta2 ** (step + 1))
    return share * grad / (second.sqrt() + eps)


def adam_second_moments(optimizer, parameters) -> dict:
    """Parameter -> (exp_avg_sq, step, betas, eps) from an Adam-family optimizer (accelerate's wrapper or not)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)
    moments = {}
    wanted = {id(p) for p in parameters}
    for group in optimizer.param_groups:
        betas, eps = tuple(group.get("betas", (0.9, 0.999))), group.get("eps", 1e-8)
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            if id(parameter) in wanted and "exp_avg_sq" in state:
                moments[parameter] = (state["exp_avg_sq"], float(state["step"]), betas, eps)
    return moments


class AffinityProbe(TrainerCallback):
    """Measures the lookahead affinity every `every` training steps on fixed-size batches drawn per step."""

    def __init__(self, dataset: ProcessedExamples, task_ids: list[str], every: int, batch_size: int,
                 step_size: float, seed: int):
        self.dataset, self.task_ids, self.every = dataset, task_ids, every
        self.batch_size, self.step_size, self.seed = batch_size, step_size, seed
        positions = {}
        for index, task in enumerate(dataset.tasks):
            positions.setdefault(task, []).append(index)
        self.indices_of_task = {t: np.array(positions[t]) for t in task_ids}
        self.measurements: list[np.ndarray] = []
        self.steps: list[int] = []
        self.seconds = 0.0

    def lookahead_batch(self, step: int) -> dict:
        """`batch_size` examples of every task (all of a smaller task), a function of (seed, step) alone."""
        samples = []
        for task in self.task_ids:
            indices = self.indices_of_task[task]
            rng = np.random.default_rng([self.seed, step])  # the same positions for every task of one size
            chosen = rng.permutation(len(indices))[: self.batch_size]
            samples += [self.dataset[int(indices[k])] for k in sorted(chosen)]
        return collate(samples)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step % self.every:
            return
        start = time.perf_counter()
        moments = adam_second_moments(optimizer, shared_parameters(model).values()) if optimizer is not None else None
        batch = self.lookahead_batch(state.global_step)
        batch["pixel_values"] = batch["pixel_values"].to(next(model.parameters()).device)  # labels follow inside
        affinity = lookahead_affinity(model, batch, self.task_ids, self.step_size, moments)
        if not np.all(np.isfinite(affinity)):
            raise FloatingPointError(f"the lookahead at step {state.global_step} gave a non-finite affinity: {affinity}")
        self.measurements.append(affinity)
        self.steps.append(state.global_step)
        self.seconds += time.perf_counter() - start


def propose_groups(task_ids: list[str], affinity_steps: np.ndarray, n_train: dict[str, int],
                   data_poor_fraction: float = 0.5, noise_z: float = 2.0, start: list[list[str]] | None = None) -> dict:
    """The advised grouping from per-step affinities `(S, T, T)` (see the module docstring for the rule),
    starting from the grouping `start` (lists of task ids; default: every task alone).

    Returns {"groups": name -> task ids, "details": per group, "relative_affinity", "mutual_affinity",
    "mutual_affinity_se", "unscored_tasks", "data_poor_tasks", "data_poor_threshold"}.
    """
    affinity_steps = np.asarray(affinity_steps, dtype=float)
    count = len(task_ids)
    if affinity_steps.ndim != 3 or affinity_steps.shape[1:] != (count, count) or len(affinity_steps) == 0:
        raise ValueError(f"affinity_steps must have shape (steps >= 1, {count}, {count}), got {affinity_steps.shape}")
    missing = [t for t in task_ids if t not in n_train]
    if missing:
        raise ValueError(f"n_train lacks task(s) {missing}")
    self_affinity = np.diagonal(affinity_steps.mean(axis=0))
    scored = self_affinity > 0
    scale = np.where(scored, self_affinity, np.inf)  # an unscored column divides to 0: neutral
    relative = affinity_steps / scale[None, None, :]
    mutual_steps = (relative + relative.transpose(0, 2, 1)) / 2
    mutual = mutual_steps.mean(axis=0)

    def mean_with(member, others):
        return float(np.mean([mutual[member, o] for o in others]))

    def valid(group):
        return all(mean_with(m, [o for o in group if o != m]) > 0 for m in group)

    def evidence(rows, columns) -> tuple[float, float]:
        """Mean mutual affinity between two sets of tasks and its standard error over the measurements."""
        per_step = mutual_steps[:, rows][:, :, columns].mean(axis=(1, 2))
        se = float(per_step.std(ddof=1) / np.sqrt(len(per_step))) if len(per_step) > 1 else float("inf")
        return float(per_step.mean()), se

    index = {t: k for k, t in enumerate(task_ids)}
    groups = [sorted(index[t] for t in group) for group in start] if start else [[k] for k in range(count)]
    if sorted(k for g in groups for k in g) != list(range(count)):
        raise ValueError(f"the starting groups {start} must hold every task of {task_ids} exactly once")
    reasons = {tuple(g): "kept: no significant affinity against it" if len(g) > 1 else "alone" for g in groups}
    # 1. A member whose affinity with the rest of its group is significantly negative leaves it.
    while True:
        worst = None
        for group in (g for g in groups if len(g) > 1):
            for member in group:
                mean, se = evidence([member], [o for o in group if o != member])
                if mean + noise_z * se < 0 and (worst is None or mean < worst[0]):
                    worst = (mean, group, member)
        if worst is None:
            break
        _, group, member = worst
        reasons.pop(tuple(group))
        group.remove(member)
        groups.append([member])
        reasons[tuple(group)] = "kept after a member left" if len(group) > 1 else "alone: its group's other member left"
        reasons[(member,)] = "alone: significantly negative affinity with the rest of its group"
    # 2. Two groups whose mutual affinity is significantly positive merge, the strongest pair first, when every
    #    member's mean affinity with the others stays positive.
    while True:
        best = None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                mean, se = evidence(groups[a], groups[b])
                if mean - noise_z * se > 0 and (best is None or mean > best[0]) and valid(groups[a] + groups[b]):
                    best = (mean, a, b)
        if best is None:
            break
        _, a, b = best
        reasons.pop(tuple(groups[a])), reasons.pop(tuple(groups[b]))
        groups[a] = sorted(groups[a] + groups.pop(b))
        reasons[tuple(groups[a])] = "significantly positive mutual affinity"

    sizes = np.array([n_train[t] for t in task_ids], dtype=float)
    threshold = data_poor_fraction * float(np.median(sizes))
    data_poor = [k for k in range(count) if sizes[k] < threshold]
    standard_error = mutual_steps.std(axis=0, ddof=1) / np.sqrt(len(mutual_steps)) if len(mutual_steps) > 1 else \
        np.full((count, count), np.inf)  # one measurement: no noise estimate, so nothing is significant
    for task in data_poor:
        own = next(g for g in groups if task in g)
        if len(own) > 1:
            continue
        candidates = []
        for group in groups:
            if group is own:
                continue
            mean, se = evidence([task], group)
            if mean + noise_z * se >= 0:
                candidates.append((float(sizes[group].sum()), mean, -min(group), group))
        if candidates:
            target = max(candidates, key=lambda c: c[:3])[3]
            reason = reasons.pop(tuple(target))
            groups.remove(own)
            reasons.pop(tuple(own))
            target.append(task)
            target.sort()
            reasons[tuple(target)] = reason + f"; data-poor {task_ids[task]} joined for data"
        else:
            reasons[tuple(own)] = "alone: data-poor, but significantly negative affinity with every group"

    groups.sort(key=min)
    named = {f"advised_{n + 1}": [task_ids[k] for k in g] for n, g in enumerate(groups)}
    details = []
    for (name, members), group in zip(named.items(), groups):
        pairs = [mutual[i, j] for i in group for j in group if i != j]
        details.append({"name": name, "tasks": members, "n_train": int(sizes[group].sum()),
                        "mean_mutual_affinity": float(np.mean(pairs)) if pairs else None,
                        "reason": reasons[tuple(group)]})
    return {
        "groups": named, "details": details, "relative_affinity": relative.mean(axis=0).tolist(),
        "mutual_affinity": mutual.tolist(), "mutual_affinity_se": standard_error.tolist(),
        "unscored_tasks": [task_ids[k] for k in range(count) if not scored[k]],
        "data_poor_tasks": [task_ids[k] for k in data_poor], "data_poor_threshold": threshold,
    }


def routing_similarity(model, processor, source, task_ids: list[str], seed: int, images_per_task: int = 8) -> np.ndarray:
    """Cosine similarity of the tasks' mean expert-gate vectors, averaged over the MoE layers."""
    from .evaluate import examples_by_task
    from .routing import cosine_similarity, task_router_usage, token_router_usage

    backbone = model.m2dino
    was_training = backbone.training
    backbone.eval()
    try:
        if backbone.config.router_mode == "task":
            usage = task_router_usage(backbone)
        else:
            usage, _ = token_router_usage(backbone, processor, examples_by_task(source, task_ids, images_per_task))
    finally:
        backbone.train(was_training)
    rows = [backbone.config.task_ids.index(t) for t in task_ids]
    return np.mean([cosine_similarity(gates[rows]) for gates, _ in usage.values()], axis=0)


def advise(data: str, tasks: list[str] | None, seed: int, output_dir: str, **probe_settings) -> dict:
    """Runs the probe on `data` ("synthetic" or a data folder), writes the groups file, report and heat map into
    `output_dir`, and returns the report (`groups`, `groups_file`, `cost_seconds`, `affinity`, `tasks`, ...)."""
    known = {f.name for f in fields(ProbeSettings)}
    unknown = sorted(set(probe_settings) - known)
    if unknown:
        raise TypeError(f"advise() got unknown probe setting(s) {unknown}; valid: {', '.join(sorted(known))}")
    settings = ProbeSettings(**probe_settings)
    start = time.perf_counter()
    from . import train
    from .data.augment import Augmenter, AugmentConfig
    from .evaluate import MAX_BASELINE_EXAMPLES, examples_by_task
    from .task_types import fit_heads, training_task_type
    from .trainer import MultiTaskTrainer
    from .training_args import M2DinoTrainingArguments

    registry = list(FMC_UIA_TASKS + EXTRA_TASKS)
    unknown = sorted(set(tasks or ()) - {t.id for t in registry})
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid: {', '.join(t.id for t in registry)}")
    run = train.M2DinoRunArguments(paradigm="au", data=data, preset=settings.preset, router_mode=settings.router_mode,
                                   num_experts=settings.num_experts, top_k=settings.top_k,
                                   synthetic_scale=settings.synthetic_scale, tasks=list(tasks) if tasks else None)
    image_size = settings.image_size or M2DinoConfig.from_preset(settings.preset).image_size
    train_source, _, data_description = train.load_sources(run, seed, image_size, registry)
    task_of_index = task_list(train_source)
    available = [t.id for t in registry if t.id in set(task_of_index)]
    task_ids = train.plan_runs(run, available, registry)[0][1]
    if len(task_ids) < 2:
        raise ValueError(f"the advisor needs at least two tasks with data, got {task_ids}")
    specs = [t for t in registry if t.id in task_ids]
    subset = train.TaskSubset(train_source, task_ids, task_of_index)
    n_train = {t: subset.tasks.count(t) for t in task_ids}

    set_seed(seed)
    model = train.build_model(run, specs, image_size)
    fitted = [spec.id for spec in specs if training_task_type(spec).fits_head]  # decode examples only for these
    fit_heads(model, specs, examples_by_task(subset, fitted, MAX_BASELINE_EXAMPLES))  # as m2dino-train does
    processor = M2DinoImageProcessor.from_config(model.config)
    augmenter = Augmenter(AugmentConfig(), registry=registry) if settings.augment else None
    train_dataset = ProcessedExamples(subset, processor, specs, augmenter, seed=seed)
    probe = AffinityProbe(ProcessedExamples(subset, processor, specs, None, seed=seed), task_ids,
                          settings.lookahead_every, settings.lookahead_batch_size,
                          settings.learning_rate * settings.lookahead_step_scale, seed)
    arguments = M2DinoTrainingArguments(
        output_dir=os.path.join(output_dir, "probe"), sampler="mixed", task_weighting=settings.task_weighting,
        report_to="none", remove_unused_columns=False,
        save_strategy="no", eval_strategy="no", logging_steps=max(1, settings.probe_steps // 4),
        learning_rate=settings.learning_rate, weight_decay=0.05, warmup_steps=0.05, lr_scheduler_type="cosine",
        per_device_train_batch_size=settings.batch_size, max_steps=settings.probe_steps, seed=seed,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=settings.dataloader_num_workers,
        disable_tqdm=True,
    )
    arguments.accelerator_config.split_batches = True
    trainer = MultiTaskTrainer(model=model, args=arguments, train_dataset=train_dataset, processor=processor,
                               callbacks=[probe])
    trainer.train()
    if not os.listdir(arguments.output_dir):  # the Trainer makes its folder even when it saves nothing
        os.rmdir(arguments.output_dir)
    similarity = routing_similarity(model, processor, subset, task_ids, seed)
    steps = np.stack(probe.measurements)
    cost = time.perf_counter() - start
    by_id = {t.id: t for t in registry}
    report = {
        "tasks": task_ids,
        "cost_seconds": cost,
        "lookahead_seconds": probe.seconds,
        "affinity": steps.mean(axis=0).tolist(),
        "affinity_se": (steps.std(axis=0, ddof=1) / np.sqrt(len(steps))).tolist() if len(steps) > 1 else None,
        "affinity_steps": steps.tolist(),  # (measurements, T, T), in the order of lookahead_steps
        "affinity_definition": "affinity[i][j] = 1 - L_j(after an update on task i's loss alone) / L_j(before), "
                               "mean over the lookahead steps; rows: task stepped on, columns: task measured",
        "routing_similarity": similarity.tolist(),
        "n_train": n_train,
        "task_types": {t: by_id[t].type for t in task_ids},
        "clinical_groups": {t: by_id[t].group for t in task_ids},
        "lookahead_steps": probe.steps,
        "seed": seed,
        "data": data_description,
        "settings": asdict(settings),
    }
    return regroup(report, output_dir)


def regroup(report: dict, output_dir: str) -> dict:
    """Applies the grouping rule to a probe's measurements (`report` as `advise` builds or wrote it) and writes
    the groups file, the report and the heat map into `output_dir`: a rerun with the same measurements costs no
    probe."""
    settings = ProbeSettings(**report["settings"])
    tasks = report["tasks"]
    start = None
    if settings.start_from == "clinical":
        groups = report["clinical_groups"]
        start = [[t for t in tasks if groups[t] == g] for g in dict.fromkeys(groups[t] for t in tasks)]
    proposal = propose_groups(tasks, np.asarray(report["affinity_steps"]), report["n_train"], settings.data_poor_fraction,
                              settings.noise_z, start)
    os.makedirs(output_dir, exist_ok=True)
    groups_file = os.path.join(output_dir, GROUPS_FILE)
    with open(groups_file, "w", encoding="utf-8") as f:
        json.dump(proposal["groups"], f, indent=2)
    report = {**report, **proposal, "groups_file": os.path.abspath(groups_file),
              "figure": os.path.abspath(os.path.join(output_dir, FIGURE_FILE))}
    plot_affinity(report, report["figure"])
    with open(os.path.join(output_dir, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def plot_affinity(report: dict, path: str):
    """Heat maps of the relative affinity and the routing similarity, tasks ordered by advised group."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    order = [report["tasks"].index(t) for members in report["groups"].values() for t in members]
    labels = [report["tasks"][k] for k in order]
    # The raw affinity's scale differs per measured task (a Dice loss against an L1 loss), so the figure shows
    # it relative to the measured task's own step, as the grouping rule reads it.
    panels = [("lookahead affinity relative to the task's own step\naffinity[i][j] / affinity[j][j]",
               np.asarray(report["relative_affinity"]), "RdBu_r"),
              ("routing similarity (cosine of expert gates)", np.asarray(report["routing_similarity"]), "viridis")]
    size = max(5.0, 0.45 * len(labels) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for ax, (title, matrix, colours) in zip(axes, panels):
        matrix = matrix[np.ix_(order, order)]
        off_diagonal = matrix[~np.eye(len(matrix), dtype=bool)]
        limit = float(np.abs(off_diagonal).max()) if off_diagonal.size else 1.0
        limit = limit or 1.0
        bounds = dict(vmin=-limit, vmax=limit) if colours == "RdBu_r" else dict(vmin=-1, vmax=1)
        image = ax.imshow(matrix, cmap=colours, **bounds)
        ax.set_xticks(range(len(labels)), labels, rotation=75, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        if len(labels) <= 12:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(j, i, f"{matrix[i, j]:.2g}", ha="center", va="center", fontsize=6)
        edge = -0.5
        for members in report["groups"].values():  # outline each advised group
            ax.add_patch(plt.Rectangle((edge, edge), len(members), len(members), fill=False, lw=1.5, ec="black"))
            edge += len(members)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("task measured (j)" if colours == "RdBu_r" else "")
        ax.set_ylabel("task stepped on (i)" if colours == "RdBu_r" else "")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("m2dino-advise: boxes are the advised groups")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Task affinity from a short probe run, and the advised task groups.")
    parser.add_argument("--data", default="synthetic", help="'synthetic', a challenge-layout folder or a datasets folder")
    parser.add_argument("--tasks", nargs="+", help="task ids (default: every task with data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="advice")
    defaults = ProbeSettings()
    for setting in fields(ProbeSettings):
        default = getattr(defaults, setting.name)
        if isinstance(default, bool):
            parser.add_argument(f"--{setting.name}", type=lambda v: v.lower() in ("1", "true", "yes"), default=default)
        else:
            kind = {"image_size": int, "router_mode": str, "num_experts": int, "top_k": int}.get(setting.name, type(default))
            parser.add_argument(f"--{setting.name}", type=kind, default=default)
    args = parser.parse_args(argv)
    settings = {f.name: getattr(args, f.name) for f in fields(ProbeSettings)}
    try:
        report = advise(args.data, args.tasks, args.seed, args.output_dir, **settings)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    print(f"probe: {len(report['tasks'])} tasks, {settings['probe_steps']} steps, {len(report['lookahead_steps'])} "
          f"lookahead measurements, {report['cost_seconds']:.1f} s")
    for detail in report["details"]:
        print(f"  {detail['name']}: {', '.join(detail['tasks'])} ({detail['reason']})")
    print(f"wrote {report['groups_file']}, {REPORT_FILE} and {FIGURE_FILE} in {args.output_dir}")
    return report


if __name__ == "__main__":
    main()
