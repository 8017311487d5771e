"""The building blocks of `m2dino-experiment`'s aggregation study (protocol in `docs/experiment.md`).

- `subsample_indices`: the training examples a task keeps at a data scale, a pure function of
  (task, scale, seed), nested across scales, the same for every paradigm;
- `EarlyStopping`: evaluates on the validation split every `eval_every` steps, stops when the score has not
  improved for `patience` evaluations (or at the step cap) and restores the best weights;
- `train_run`: one model on some tasks at one (scale, seed), early-stopped on validation, scored on test;
- `RunCache`: finished runs stored under a hash of everything that defines them, so a study resumes;
- `normalised_change`, `ci95`, `task_rows`, `summary_rows`, `plot_study`: the tables and figures.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from modeling_m2dino import EXTRA_TASKS, FMC_UIA_TASKS

from .metrics import normalized_score
from .task_types import TRAINING_TASK_TYPES, training_task_type
from .train import TaskSubset

MIN_TRAIN_EXAMPLES = 4  # a task keeps at least this many training examples at any scale
CACHE_VERSION = 2  # bump when a change to the protocol makes cached runs incomparable
TYPE_COLOURS = {name: kind.colour for name, kind in TRAINING_TASK_TYPES.items()}
PARADIGM_STYLES = {"cg": ("tab:purple", "o"), "au": ("tab:gray", "^"), "advised": ("tab:olive", "s")}


# ----------------------------------------------------------------------------------------------
# data scale
# ----------------------------------------------------------------------------------------------


def subsample_indices(task_id: str, n_available: int, fraction: float, seed: int) -> list[int]:
    """Positions (sorted, among the task's `n_available` training examples) kept at `fraction`.

    One permutation per (task, seed), whose first `round(fraction * n)` entries are kept (at least
    MIN_TRAIN_EXAMPLES): a smaller scale is a subset of a larger one, and no paradigm enters the choice.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"{task_id}: a subsampling fraction must lie in (0, 1], got {fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([zlib.crc32(task_id.encode()), int(seed), 0x5CA1E]))
    order = rng.permutation(n_available)
    keep = min(n_available, max(MIN_TRAIN_EXAMPLES, int(round(fraction * n_available))))
    return sorted(int(i) for i in order[:keep])


class ScaledTaskSubset(TaskSubset):
    """The training examples of some tasks of a source at one (fraction, seed): `subsample_indices` per task.

    Keeps `task_of` from `train.TaskSubset`, so nothing is decoded to learn tasks.
    """

    def __init__(self, source, tasks, fraction: float, seed: int):
        from .data.collate import task_list

        task_of_index = task_list(source)
        positions: dict[str, list[int]] = {}
        for index, task in enumerate(task_of_index):
            if task in tasks:
                positions.setdefault(task, []).append(index)
        missing = [t for t in tasks if t not in positions]
        if missing:
            raise ValueError(f"task(s) {missing} have no training examples in the data")
        self.source = source
        self.indices, self.tasks = [], []
        for task in tasks:
            kept = [positions[task][i] for i in subsample_indices(task, len(positions[task]), fraction, seed)]
            self.indices += kept
            self.tasks += [task] * len(kept)

    def source_indices(self, task: str) -> list[int]:
        return [i for i, t in zip(self.indices, self.tasks) if t == task]


# ----------------------------------------------------------------------------------------------
# early stopping
# ----------------------------------------------------------------------------------------------


class EarlyStopping(TrainerCallback):
    """Evaluate every `eval_every` steps; stop after `patience` evaluations without improvement.

    The score, higher better, is `score(metrics)` of each evaluation's metrics (default: the Trainer's
    `eval_score`); the study passes `validation_score`. An improvement must exceed `min_delta`. The best
    weights are kept in memory and restored with `restore_best`. `stopped_by` is "patience" or "cap" (the
    step cap was reached).
    """

    def __init__(self, eval_every: int, patience: int, min_delta: float = 0.0, score=None):
        if eval_every < 1 or patience < 1:
            raise ValueError(f"eval_every ({eval_every}) and patience ({patience}) must be at least 1")
        self.eval_every, self.patience, self.min_delta = eval_every, patience, min_delta
        self.score = score or (lambda metrics: metrics["eval_score"])
        self.history: list[tuple[int, float]] = []
        self.best_score, self.best_step, self.best_state = -math.inf, 0, None
        self.evaluations_without_improvement = 0
        self.stopped_by = "cap"

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.eval_every == 0 or state.global_step >= state.max_steps:
            control.should_evaluate = True
        return control

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        score = float(self.score(metrics))
        self.history.append((state.global_step, score))
        if score > self.best_score + self.min_delta or len(self.history) == 1:
            self.best_score, self.best_step = score, state.global_step
            self.evaluations_without_improvement = 0
            if model is not None:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.evaluations_without_improvement += 1
            if self.evaluations_without_improvement >= self.patience:
                self.stopped_by = "patience"
                control.should_training_stop = True
        return control

    def restore_best(self, model):
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


# ----------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """One model to train: its tasks at one (scale, seed). `paradigms` lists every (paradigm, name) using it."""

    tasks: tuple[str, ...]
    scale: float
    seed: int
    paradigms: list[tuple[str, str]] = field(default_factory=list)

    def key(self, settings: dict) -> str:
        """Hash of everything that defines the run; two paradigms with the same task set share it. The
        evaluation period hashed is the run's own (`eval_period`)."""
        description = {"version": CACHE_VERSION, "tasks": sorted(self.tasks), "scale": self.scale, "seed": self.seed,
                       **settings}
        if "eval_every" in settings:
            description["eval_every"] = self.eval_period(settings["eval_every"])
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]

    def eval_period(self, eval_every: int) -> int:
        """Steps between a run's validation evaluations: `eval_every` per task. A model of k tasks draws each
        task in 1/k of a batch, so it is evaluated (and its patience counted) after as many images of every
        task as a single-task model, as its step cap is k x `max_steps`."""
        return eval_every * len(self.tasks)

    def step_cap(self, max_steps: int) -> int:
        """The run's step cap: `max_steps` per task, so the cap never decides a multi-task model's budget alone."""
        return max_steps * len(self.tasks)


def plan_study(paradigm_groups: dict[str, list[tuple[str, list[str]]]], scales, seeds) -> list[RunSpec]:
    """Distinct runs of a study: paradigm -> [(model name, task ids)], at every scale and seed."""
    runs: dict[tuple, RunSpec] = {}
    for seed in seeds:
        for scale in scales:
            for paradigm, models in paradigm_groups.items():
                for name, tasks in models:
                    spec = runs.setdefault((tuple(sorted(tasks)), scale, seed), RunSpec(tuple(tasks), scale, seed))
                    spec.paradigms.append((paradigm, name))
    return list(runs.values())


class RunCache:
    """`<root>/<key>/result.json` per finished run, written atomically, so a killed study loses only the run
    it was in."""

    def __init__(self, root: str):
        self.root = root

    def path(self, key: str) -> str:
        return os.path.join(self.root, key, "result.json")

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def put(self, key: str, result: dict):
        path = self.path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        os.replace(path + ".tmp", path)


@dataclass
class StudyData:
    """The splits a study trains, early-stops and reports on, and what they are."""

    train: object
    val: object
    test: object
    description: dict


def load_study_data(data: str, image_size: int, data_seed: int, suite_scale: float, registry) -> StudyData:
    """Synthetic: a suite at `suite_scale` (train / val / test). A folder: train, val and test (or val again,
    flagged in the description, when the folder has no test split)."""
    if data == "synthetic":
        from .data.synthetic import SyntheticUltrasoundSuite

        suite = SyntheticUltrasoundSuite(scale=suite_scale, image_size=image_size, seed=data_seed, tasks=registry)
        return StudyData(suite.dataset("train"), suite.dataset("val"), suite.dataset("test"),
                         {"source": "synthetic", "suite_scale": suite_scale, "image_size": image_size,
                          "data_seed": data_seed, "stop_split": "val", "report_split": "test"})
    from .data.hf_folder import load_data

    splits = load_data(data, registry=registry)
    if "val" not in splits and "validation" in splits:
        splits["val"] = splits["validation"]
    missing = [s for s in ("train", "val") if s not in splits]
    if missing:
        raise SystemExit(f"{data} has no {missing} split(s); found {list(splits)}")
    report = "test" if "test" in splits else "val"
    return StudyData(splits["train"], splits["val"], splits[report],
                     {"source": os.path.abspath(data), "stop_split": "val", "report_split": report})


def train_run(spec: RunSpec, data: StudyData, run_args, training_args, fraction: float, protocol: dict) -> dict:
    """Trains `spec.tasks` on their `fraction` subsample, early-stopped on validation; scores on the report split.

    `run_args` / `training_args`: `train.parse_arguments` of the study's pass-through flags (model, batch,
    learning rate...). `protocol`: eval_every, patience, max_steps, min_delta.
    """
    from transformers import set_seed

    from .data.augment import AugmentConfig, Augmenter
    from .data.collate import ProcessedExamples
    from .evaluate import MAX_BASELINE_EXAMPLES, evaluate_model, examples_by_task
    from .task_types import fit_heads
    from .train import build_model
    from .trainer import MultiTaskTrainer
    from modeling_m2dino import M2DinoImageProcessor

    started = time.time()
    registry = list(FMC_UIA_TASKS + EXTRA_TASKS)
    specs = [t for t in registry if t.id in spec.tasks]
    image_size = run_args.image_size or _preset_image_size(run_args.preset)
    set_seed(spec.seed)
    model = build_model(run_args, specs, image_size)
    processor = M2DinoImageProcessor.from_config(model.config)
    augmenter = Augmenter(AugmentConfig(), registry=registry) if run_args.augment else None
    train_subset = ScaledTaskSubset(data.train, list(spec.tasks), fraction, spec.seed)
    train_dataset = ProcessedExamples(train_subset, processor, specs, augmenter, seed=spec.seed)
    val_sets = examples_by_task(data.val, spec.tasks, run_args.eval_examples_per_task)
    baseline_sets = examples_by_task(train_subset, spec.tasks, MAX_BASELINE_EXAMPLES)
    fit_heads(model, specs, baseline_sets)  # as m2dino-train does: a measurement head's statistics
    stopper = EarlyStopping(protocol["eval_every"], protocol["patience"], protocol.get("min_delta", 0.0),
                            score=lambda metrics: validation_score(trainer.last_eval_results))
    training_args.seed = spec.seed
    training_args.max_steps = protocol["max_steps"]
    training_args.distance_metrics = False  # selection is on the primary metrics (DSC), not on HD
    trainer = MultiTaskTrainer(
        model=model, args=training_args, train_dataset=train_dataset, processor=processor, eval_sets=val_sets,
        baseline_sets=baseline_sets, callbacks=[stopper],
    )
    trainer.remove_callback(PrinterCallback)  # a study trains hundreds of models: one line per run is printed instead
    trainer.train()
    steps = trainer.state.global_step
    stopper.restore_best(model)
    report_sets = examples_by_task(data.test, spec.tasks, run_args.eval_examples_per_task)
    results = evaluate_model(model, processor, report_sets, baseline_sets,
                             batch_size=training_args.per_device_eval_batch_size, seed=spec.seed)
    n_train = {t: train_subset.tasks.count(t) for t in spec.tasks}
    for task_id, result in results["tasks"].items():
        result["n_train"] = n_train[task_id]
        result["n_train_available"] = len(examples_positions(data.train, task_id))
    return {
        "tasks": list(spec.tasks), "scale": spec.scale, "seed": spec.seed, "fraction": fraction,
        "steps": steps, "stopped_by": stopper.stopped_by, "best_step": stopper.best_step,
        "best_val_score": stopper.best_score, "val_history": stopper.history, "max_steps": protocol["max_steps"],
        "seconds": time.time() - started, "test_score": results["score"], "results": results["tasks"],
        "data": data.description,
    }


def examples_positions(source, task_id: str) -> list[int]:
    from .data.collate import task_list

    return [i for i, t in enumerate(task_list(source)) if t == task_id]


def _preset_image_size(preset: str) -> int:
    from modeling_m2dino import M2DinoConfig

    return M2DinoConfig.from_preset(preset).image_size


# ----------------------------------------------------------------------------------------------
# analysis
# ----------------------------------------------------------------------------------------------


def task_score(result: dict) -> float:
    """A task's result on the project's normalised score, higher better: the primary metric itself for DSC,
    F1_macro and IoU; `1 - MRE / MRE_baseline` for MRE. Unlike `metrics.normalized_score` (a checkpoint
    selector) it is not clipped at 0, so two models both worse than the baseline still differ."""
    task_type, metrics, baseline = result["type"], result["metrics"], result.get("baseline")
    kind = training_task_type(task_type)
    value = float(metrics[kind.primary_metric])
    if kind.higher_is_better:
        return value
    if baseline is None or kind.primary_metric not in baseline:
        return normalized_score(task_type, metrics)  # NMRE: 1 - MRE / image diagonal
    reference = float(baseline[kind.primary_metric])
    return 1.0 - value / reference if reference > 0 else float(value == 0)


def validation_score(results: dict) -> float:
    """The early-stopping score of an evaluation (`evaluate_model`'s results): the mean `task_score` of its
    tasks. Unlike the Trainer's `eval_score` it is not clipped at 0, so a task still worse than its baseline
    (a regression task on a few images) shows its progress instead of a flat 0 that stops the run."""
    return float(np.mean([task_score(result) for result in results["tasks"].values()]))


def normalised_change(result: dict, reference: dict) -> float:
    """`task_score(result) - task_score(reference)`: the change over TS in normalised-score points."""
    return task_score(result) - task_score(reference)


def raw_improvement(task_type: str, value: float, reference: float) -> float:
    """Signed so that positive is better (for MRE, lower is better)."""
    return value - reference if training_task_type(task_type).higher_is_better else reference - value


def ci95(values) -> tuple[float, float, float]:
    """Mean and the 95% t-interval of the mean over seeds (NaN bounds with a single value)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def task_rows(per_run: dict[tuple[str, float, int], dict[str, dict]], paradigms, scales, seeds) -> list[dict]:
    """Rows of per_task.csv from {(paradigm, scale, seed): {task: result}}: one per (task, scale)."""
    rows = []
    others = [p for p in paradigms if p != "ts"]
    for task in FMC_UIA_TASKS + EXTRA_TASKS:
        for scale in scales:
            if not all(task.id in per_run.get(("ts", scale, s), {}) for s in seeds):
                continue
            metric = training_task_type(task.type).primary_metric
            row = {"task": task.id, "type": task.type, "group": task.group, "scale": scale,
                   "n_train": float(np.mean([per_run[("ts", scale, s)][task.id]["n_train"] for s in seeds])),
                   "metric": metric,
                   "baseline": float(np.mean([per_run[("ts", scale, s)][task.id].get("baseline", {}).get(metric, np.nan)
                                              for s in seeds]))}
            for p in paradigms:
                values = [per_run[(p, scale, s)][task.id]["metrics"][metric] for s in seeds]
                row[f"{p.upper()}_mean"], row[f"{p.upper()}_sd"] = float(np.mean(values)), float(np.std(values))
            for p in others:
                changes = [normalised_change(per_run[(p, scale, s)][task.id], per_run[("ts", scale, s)][task.id])
                           for s in seeds]
                raw = [raw_improvement(task.type, per_run[(p, scale, s)][task.id]["metrics"][metric],
                                       per_run[("ts", scale, s)][task.id]["metrics"][metric]) for s in seeds]
                mean, low, high = ci95(changes)
                row.update({f"{p.upper()}-TS_norm": mean, f"{p.upper()}-TS_norm_ci_low": low,
                            f"{p.upper()}-TS_norm_ci_high": high, f"{p.upper()}-TS_raw": float(np.mean(raw))})
                row[f"{p.upper()}_changes"] = changes  # per seed, for the summaries (not written to CSV)
            rows.append(row)
    return rows


def summary_rows(rows: list[dict], by: str, paradigms, scales) -> list[dict]:
    """Mean normalised change per (`by` = "group" or "type", scale, paradigm): the per-seed mean over the
    tasks of the group, then the mean and 95% CI of that over seeds."""
    out = []
    for value in dict.fromkeys(r[by] for r in rows):
        for scale in scales:
            members = [r for r in rows if r[by] == value and r["scale"] == scale]
            if not members:
                continue
            for p in paradigms:
                if p == "ts":
                    continue
                per_seed = np.mean([r[f"{p.upper()}_changes"] for r in members], axis=0)
                mean, low, high = ci95(per_seed)
                out.append({by: value, "scale": scale, "paradigm": p, "tasks": len(members),
                            "n_train_per_task": float(np.mean([r["n_train"] for r in members])),
                            "change_norm": mean, "ci_low": low, "ci_high": high})
    return out


def csv_rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("_changes")} for row in rows]


def plot_study(rows: list[dict], by_type: list[dict], by_group: list[dict], paradigms, out_dir: str):
    """change_vs_size.png (per task type), per_group_change.png, per_type_change.png, per_task_change.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    others = [p for p in paradigms if p != "ts"]
    types = [t for t in TYPE_COLOURS if any(r["type"] == t for r in by_type)]  # segmentation, classification, detection, regression
    fig, axes = plt.subplots(1, max(1, len(types)), figsize=(4 * max(1, len(types)), 3.6), sharey=True, squeeze=False)
    for ax, task_type in zip(axes[0], types):
        for p in others:
            points = sorted((r["n_train_per_task"], r["change_norm"], r["ci_low"], r["ci_high"])
                            for r in by_type if r["type"] == task_type and r["paradigm"] == p)
            x, y, low, high = (np.array(v, dtype=float) for v in zip(*points))
            colour, marker = PARADIGM_STYLES.get(p, ("black", "x"))
            yerr = np.nan_to_num(np.vstack([y - low, high - y]))
            ax.errorbar(x, y, yerr=yerr, color=colour, marker=marker, capsize=3, label=f"{p.upper()} - TS")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(sorted({float(r["n_train_per_task"]) for r in by_type if r["type"] == task_type}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))  # the sizes, not powers of ten
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(task_type)
        ax.set_xlabel("training examples per task")
    axes[0][0].set_ylabel("change in normalised score vs TS")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Change versus training-set size (mean and 95% CI over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "change_vs_size.png"), dpi=120)
    plt.close(fig)

    for by, summary, name in (("group", by_group, "per_group_change.png"), ("type", by_type, "per_type_change.png")):
        keys = list(dict.fromkeys((r[by], r["scale"]) for r in summary))
        x = np.arange(len(keys))
        width = 0.8 / max(1, len(others))
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(keys)), 3.8))
        for k, p in enumerate(others):
            picked = {(r[by], r["scale"]): r for r in summary if r["paradigm"] == p}
            y = np.array([picked[key]["change_norm"] for key in keys])
            low = np.array([picked[key]["ci_low"] for key in keys])
            high = np.array([picked[key]["ci_high"] for key in keys])
            ax.bar(x + (k - (len(others) - 1) / 2) * width, y, width, yerr=np.nan_to_num(np.vstack([y - low, high - y])),
                   color=PARADIGM_STYLES.get(p, ("black", "x"))[0], capsize=2, label=f"{p.upper()} - TS")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [f"{g}\nx{s:g}" for g, s in keys], fontsize=7)
        ax.set_ylabel("change in normalised score vs TS")
        ax.set_title(f"Per-{by} change (mean over its tasks, 95% CI over seeds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=120)
        plt.close(fig)

    largest = max(r["scale"] for r in rows)
    top = [r for r in rows if r["scale"] == largest]
    x = np.arange(len(top))
    width = 0.8 / max(1, len(others))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(top)), 4))
    for k, p in enumerate(others):
        y = np.array([r[f"{p.upper()}-TS_norm"] for r in top])
        low = np.array([r[f"{p.upper()}-TS_norm_ci_low"] for r in top])
        high = np.array([r[f"{p.upper()}-TS_norm_ci_high"] for r in top])
        ax.bar(x + (k - (len(others) - 1) / 2) * width, y, width, yerr=np.nan_to_num(np.vstack([y - low, high - y])),
               color=[TYPE_COLOURS[r["type"]] for r in top], edgecolor=PARADIGM_STYLES.get(p, ("black", "x"))[0],
               hatch=("", "//", "..")[k % 3], capsize=2, label=f"{p.upper()} - TS")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [r["task"] for r in top], rotation=75, fontsize=7)
    ax.set_ylabel("change in normalised score vs TS")
    ax.set_title(f"Per-task change at scale x{largest:g} (colour: task type; hatch: paradigm)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "per_task_change.png"), dpi=120)
    plt.close(fig)
