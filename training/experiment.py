"""`m2dino-experiment`: the paper's comparison of task aggregation paradigms on one dataset.

    m2dino-experiment --data synthetic --seeds 3 --steps_per_task 40 --output_dir results

For every seed it trains TS (one model per task), CG (one per clinical group) and AU (one for all tasks) on
the same data with the same per-task budget (a model of k tasks trains `k * steps_per_task` steps with
uniform task sampling, so every task sees the same number of batches in expectation), then writes:

- `per_task.csv` / `per_task.json`: task, type, group, n_train, the primary metric of TS, CG and AU (mean and
  sd over seeds), CG-TS and AU-TS, and the trivial baseline. Differences are *improvements*: signed so that a
  positive value is better (for MRE, lower is better, so CG-TS is reported as TS - CG);
- `per_group.csv`: the mean improvement of CG and AU over TS per clinical group;
- `per_task_change.png`, `per_group_change.png`, `change_vs_size.png` (the paper's central figure: change
  versus training-set size).
"""

import argparse
import csv
import json
import os

import numpy as np

from modeling_m2dino import FMC_UIA_TASKS

from . import train
from .metrics import HIGHER_IS_BETTER

PARADIGM_ORDER = ("ts", "cg", "au")
TYPE_COLOURS = {"segmentation": "tab:blue", "classification": "tab:orange", "detection": "tab:green", "regression": "tab:red"}


def run_paradigm(paradigm: str, seed: int, args, passthrough: list[str]) -> dict[str, dict]:
    """Trains one paradigm for one seed; task id -> its evaluation result (from whichever model holds it)."""
    output_dir = os.path.join(args.output_dir, "runs", f"seed{seed}", paradigm)
    results = {}
    for run_name in _runs(paradigm, args):
        steps = args.steps_per_task * len(run_name[1])
        argv = ["--paradigm", paradigm, "--data", args.data, "--seed", str(seed), "--max_steps", str(steps),
                "--task_weighting", "uniform", "--output_dir", os.path.join(output_dir, run_name[0]), "--overwrite",
                "--tasks", *run_name[1], *passthrough]
        if paradigm == "cg":
            argv += ["--groups", _single_group_file(args.output_dir, run_name)]
        for run_results in train.main(argv).values():
            for task_id, result in run_results["tasks"].items():
                results[task_id] = result
    return results


def _runs(paradigm, args) -> list[tuple[str, list[str]]]:
    tasks = [t for t in FMC_UIA_TASKS if args.tasks is None or t.id in args.tasks]
    if paradigm == "au":
        return [("all", [t.id for t in tasks])]
    if paradigm == "ts":
        return [(t.id, [t.id]) for t in tasks]
    groups = args.group_map
    return [(name, [t.id for t in tasks if t.id in members]) for name, members in groups.items()
            if any(t.id in members for t in tasks)]


def _single_group_file(root: str, run_name) -> str:
    path = os.path.join(root, "runs", f"group_{run_name[0]}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({run_name[0]: run_name[1]}, f)
    return path


def improvement(task_type: str, value: float, reference: float) -> float:
    return value - reference if HIGHER_IS_BETTER[task_type] else reference - value


def summarise(per_seed: dict[int, dict[str, dict]]) -> list[dict]:
    """Rows of per_task.csv from {seed: {paradigm: {task: result}}}."""
    seeds = sorted(per_seed)
    tasks = [t for t in FMC_UIA_TASKS if all(t.id in per_seed[s]["ts"] for s in seeds)]
    rows = []
    for task in tasks:
        first = per_seed[seeds[0]]["ts"][task.id]
        metric = first["primary_metric"]
        values = {p: np.array([per_seed[s][p][task.id]["metrics"][metric] for s in seeds]) for p in PARADIGM_ORDER}
        row = {"task": task.id, "type": task.type, "group": task.group, "n_train": first.get("n_train"), "metric": metric}
        for p in PARADIGM_ORDER:
            row[f"{p.upper()}_mean"], row[f"{p.upper()}_sd"] = float(values[p].mean()), float(values[p].std(ddof=0))
        for p in ("cg", "au"):
            change = np.array([improvement(task.type, v, t) for v, t in zip(values[p], values["ts"])])
            row[f"{p.upper()}-TS_mean"], row[f"{p.upper()}-TS_sd"] = float(change.mean()), float(change.std(ddof=0))
        row["baseline"] = float(first["baseline"][metric]) if "baseline" in first else float("nan")
        rows.append(row)
    return rows


def group_rows(rows: list[dict]) -> list[dict]:
    groups = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    return [{"group": g, "tasks": len(members), "n_train": int(sum(r["n_train"] or 0 for r in members)),
             "CG-TS_mean": float(np.mean([r["CG-TS_mean"] for r in members])),
             "AU-TS_mean": float(np.mean([r["AU-TS_mean"] for r in members]))} for g, members in groups.items()]


def write_csv(path: str, rows: list[dict]):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict], groups: list[dict], out_dir: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["task"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows)), 4))
    for offset, p, hatch in ((-0.2, "CG", ""), (0.2, "AU", "//")):
        ax.bar(x + offset, [r[f"{p}-TS_mean"] for r in rows], 0.4, yerr=[r[f"{p}-TS_sd"] for r in rows], hatch=hatch,
               color=[TYPE_COLOURS[r["type"]] for r in rows], edgecolor="black", label=f"{p} - TS")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, names, rotation=75, fontsize=7)
    ax.set_ylabel("improvement over TS (primary metric)")
    ax.set_title("Per-task change versus task-specific training (colour: task type; hatched: AU)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "per_task_change.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    gx = np.arange(len(groups))
    ax.bar(gx - 0.2, [g["CG-TS_mean"] for g in groups], 0.4, label="CG - TS")
    ax.bar(gx + 0.2, [g["AU-TS_mean"] for g in groups], 0.4, label="AU - TS")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(gx, [g["group"] for g in groups], rotation=30)
    ax.set_ylabel("mean improvement over TS")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "per_group_change.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = [max(1, r["n_train"] or 1) for r in rows]
    for p, marker in (("CG", "o"), ("AU", "^")):
        ax.scatter(sizes, [r[f"{p}-TS_mean"] for r in rows], c=[TYPE_COLOURS[r["type"]] for r in rows], marker=marker,
                   label=f"{p} - TS", edgecolors="black")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training examples of the task")
    ax.set_ylabel("improvement over TS")
    ax.set_title("Change versus training-set size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "change_vs_size.png"), dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description="TS vs CG vs AU on the same data, seeds and per-task budget.")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--tasks", nargs="+", help="task ids (default: all)")
    parser.add_argument("--groups", help="JSON file mapping groups to tasks (default: the brief's grouping)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--steps_per_task", type=int, default=40)
    parser.add_argument("--output_dir", default="results")
    args, passthrough = parser.parse_known_args(argv)  # the rest goes to m2dino-train (e.g. --preset, --image_size)
    if args.tasks:
        unknown = sorted(set(args.tasks) - {t.id for t in FMC_UIA_TASKS})
        if unknown:
            raise SystemExit(f"unknown task(s) {unknown}; valid: {', '.join(t.id for t in FMC_UIA_TASKS)}")
    if args.groups:
        with open(args.groups, encoding="utf-8") as f:
            args.group_map = json.load(f)
    else:
        from modeling_m2dino import clinical_groups

        args.group_map = clinical_groups(FMC_UIA_TASKS)
    os.makedirs(args.output_dir, exist_ok=True)
    per_seed = {seed: {p: run_paradigm(p, seed, args, passthrough) for p in PARADIGM_ORDER} for seed in range(args.seeds)}
    rows = summarise(per_seed)
    groups = group_rows(rows)
    write_csv(os.path.join(args.output_dir, "per_task.csv"), rows)
    with open(os.path.join(args.output_dir, "per_task.json"), "w", encoding="utf-8") as f:
        json.dump({"seeds": list(range(args.seeds)), "steps_per_task": args.steps_per_task, "data": args.data,
                   "tasks": rows}, f, indent=2)
    write_csv(os.path.join(args.output_dir, "per_group.csv"), groups)
    plot(rows, groups, args.output_dir)
    print(f"wrote {args.output_dir}/per_task.csv, per_group.csv and three plots over {args.seeds} seed(s)")
    return rows


if __name__ == "__main__":
    main()
