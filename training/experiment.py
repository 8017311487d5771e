"""`m2dino-experiment`: the aggregation study, TS against CG, AU and an advised grouping, across data scales.

    m2dino-experiment --output_dir study                       # the default subset (docs/experiment.md)
    m2dino-experiment --tasks all --output_dir study_full      # all 27 tasks

Protocol (full text in `docs/experiment.md`): every model, whatever its number of tasks, trains until its
validation score stops improving (evaluated every `--eval_every` steps, stopped after `--patience`
evaluations without improvement, or at its cap of `--max_steps` per task), and its best weights are scored
on the test split. Every paradigm at a (scale, seed) sees the same per-task training subsample
(`study.subsample_indices`).
Finished runs are cached under `<output_dir>/runs/<hash of their settings>/`, so a killed study resumes.
Every flag the command does not know goes to the model and the Trainer, as with `m2dino-train`
(`--preset`, `--image_size`, `--per_device_train_batch_size`, `--learning_rate`, ...).

Writes `runs.csv` (per run: tasks, steps, stopped by patience or cap, seconds), `per_task.csv` / `.json`
(raw primary metrics per paradigm, the trivial baseline, and the change over TS on the normalised score
with its 95% CI over seeds), `per_group.csv`, `per_type.csv`, `summary.json` and the figures
`change_vs_size.png`, `per_group_change.png`, `per_type_change.png`, `per_task_change.png`.
"""

import argparse
import csv
import json
import os
import time

import numpy as np

from modeling_m2dino import EXTRA_TASKS, FMC_UIA_TASKS

from . import study, train
from .data.sources import synthetic_tasks

PARADIGMS = ("ts", "cg", "au", "advised")
# Two clinical groups of different data scale (obstetrics large, breast small) and all four task types
# (detection from thyroid, a group of one here, so its CG model is its TS model). Per scale and seed: five
# TS models, two CG, one AU.
DEFAULT_TASKS = ("fetal_head", "FUGC", "breast_lesion", "breast_2cls", "thyroid_nodule_det")
# Flags the study gives every run before the user's own (which override them): every task weighs the same;
# the learning rate does not follow a schedule tied to the step cap, since where a run stops is not known in
# advance; and small models at 64 px train faster with the images prepared in the training process than with a
# data worker taking one of two cores (24 s against 31 s for a 60-step run, docs/experiment.md).
STUDY_TRAINING_DEFAULTS = ("--task_weighting", "uniform", "--lr_scheduler_type", "constant_with_warmup",
                           "--warmup_steps", "10", "--per_device_train_batch_size", "32", "--disable_tqdm", "true",
                           "--logging_steps", "1000", "--dataloader_num_workers", "0")
# Seconds per training step (evaluations included) of the tiny preset at 64 px, batch 64, on 2 cores: the
# prior of the time estimate until the study has finished runs of its own to measure (docs/experiment.md).
SECONDS_PER_STEP = 0.4


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description="The aggregation study: TS vs CG vs AU (vs advised) across data scales.",
                                     allow_abbrev=False)  # `--seed` must not pass for `--seeds`
    parser.add_argument("--data", default="synthetic", help="'synthetic' or a challenge-layout / datasets folder")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS),
                        help="task ids, or 'all' (default: the documented subset of seven tasks)")
    parser.add_argument("--paradigms", default="ts,cg,au,advised", help=f"comma-separated, among {', '.join(PARADIGMS)}; ts is required")
    parser.add_argument("--groups", help="JSON groups file for cg (default: the clinical groups)")
    parser.add_argument("--advised_groups", help="JSON groups file for 'advised' (default: run m2dino-advise)")
    parser.add_argument("--scales", default="0.1,0.3,1",
                        help="fractions of each task's training set (synthetic: any positive scale, the suite is generated at the largest)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--eval_every", type=int, default=10, help="steps between validation evaluations")
    parser.add_argument("--patience", type=int, default=3, help="evaluations without improvement before stopping")
    parser.add_argument("--min_delta", type=float, default=0.0, help="smallest validation-score gain that counts as one")
    parser.add_argument("--max_steps", type=int, default=60,
                        help="step cap per task: a run of k tasks stops at k * max_steps at the latest")
    parser.add_argument("--data_seed", type=int, default=0, help="seed of the synthetic suite (the same for every run)")
    parser.add_argument("--seconds_per_step", type=float, default=None,
                        help=f"prior for the time estimate (default: measured from cached runs, else {SECONDS_PER_STEP})")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and exit")
    parser.add_argument("--output_dir", default="results")
    args, passthrough = parser.parse_known_args(argv)
    if {"--seed", "--max-steps"} & set(passthrough):
        raise SystemExit("--seed and --max_steps are set by the study (use --seeds and --max_steps of m2dino-experiment)")
    valid = {t.id for t in FMC_UIA_TASKS + EXTRA_TASKS}
    args.tasks = [t.id for t in FMC_UIA_TASKS] if args.tasks == ["all"] else args.tasks
    unknown = sorted(set(args.tasks) - valid)
    if unknown:
        raise SystemExit(f"--tasks: unknown task(s) {unknown}; valid: all, {', '.join(sorted(valid))}")
    args.tasks = [t.id for t in FMC_UIA_TASKS + EXTRA_TASKS if t.id in args.tasks]
    args.paradigms = [p.strip() for p in args.paradigms.split(",") if p.strip()]
    bad = [p for p in args.paradigms if p not in PARADIGMS]
    if bad or "ts" not in args.paradigms or len(set(args.paradigms)) < 2:
        raise SystemExit(f"--paradigms {','.join(args.paradigms)}: ts and at least one of cg, au, advised "
                         f"(valid: {', '.join(PARADIGMS)})")
    args.paradigms = [p for p in PARADIGMS if p in args.paradigms]
    try:
        args.scales = sorted({float(s) for s in args.scales.split(",") if s.strip()})
    except ValueError:
        raise SystemExit(f"--scales {args.scales!r}: comma-separated numbers, e.g. 0.1,0.3,1") from None
    if not args.scales or args.scales[0] <= 0:
        raise SystemExit(f"--scales {args.scales}: every scale must be positive")
    if args.data != "synthetic" and args.scales[-1] > 1:
        raise SystemExit(f"--scales {args.scales}: a folder can only be subsampled (scales <= 1); only the synthetic suite generates more")
    if args.seeds < 1:
        raise SystemExit(f"--seeds {args.seeds}: at least 1")
    return args, passthrough


def models_of(paradigm: str, tasks: list[str], groups_file: str | None) -> list[tuple[str, list[str]]]:
    """(model name, task ids) of each model a paradigm trains over `tasks` (a groups file as m2dino-train reads it)."""
    if paradigm == "ts":
        return [(t, [t]) for t in tasks]
    if paradigm == "au":
        return [("all", list(tasks))]
    run = train.M2DinoRunArguments(paradigm="cg", tasks=list(tasks), groups=groups_file)
    return train.plan_runs(run, list(tasks), list(FMC_UIA_TASKS + EXTRA_TASKS))


def run_advisor(args, tasks) -> dict:
    """The advisor's grouping (m2dino-advise), imported only when a study asks for it. A resumed study reuses
    the probe of the same request (data, tasks, seed) found in `<output_dir>/advise` instead of running it again."""
    try:
        from .advise import REPORT_FILE, advise, regroup
    except ImportError as error:
        raise SystemExit(f"--paradigms advised needs --advised_groups FILE or m2dino-advise ({error})") from None
    folder = os.path.join(args.output_dir, "advise")
    request = {"data": args.settings["data"], "tasks": list(tasks), "seed": 0}
    request_file = os.path.join(folder, "request.json")
    if os.path.exists(request_file) and os.path.exists(os.path.join(folder, REPORT_FILE)):
        with open(request_file, encoding="utf-8") as f:
            same_request = json.load(f) == request
        if same_request:
            with open(os.path.join(folder, REPORT_FILE), encoding="utf-8") as f:
                report = regroup(json.load(f), folder)  # the grouping rule applied again to the measurements
            print(f"the advisor's probe: reused from {folder} (it took {report['cost_seconds']:.0f} s)", flush=True)
            return report
    report = advise(data=request["data"], tasks=request["tasks"], seed=request["seed"], output_dir=folder)
    with open(request_file, "w", encoding="utf-8") as f:
        json.dump(request, f)
    return report


def study_settings(args, passthrough, run_args) -> dict:
    """Everything besides (tasks, scale, seed) that defines a run, hashed into its cache key."""
    data = args.data if args.data == "synthetic" else os.path.abspath(args.data)
    return {"data": data, "data_seed": args.data_seed, "suite_scale": run_args.synthetic_scale * args.scales[-1],
            "eval_every": args.eval_every, "patience": args.patience, "min_delta": args.min_delta,
            "max_steps": args.max_steps, "training_flags": [*STUDY_TRAINING_DEFAULTS, *passthrough]}


def fraction_of(args, scale: float) -> float:
    """The subsampling fraction of a scale: on the synthetic suite, generated at the largest scale, scale / largest."""
    return scale / args.scales[-1] if args.data == "synthetic" else scale


def print_plan(runs, cached: dict, args, seconds_per_step: float, probe: str):
    todo = [r for r in runs if r.key(args.settings) not in cached]
    bound = sum(r.step_cap(args.max_steps) for r in todo) * seconds_per_step
    print(f"study plan: {len(args.tasks)} task(s), paradigms {','.join(args.paradigms)}, scales "
          f"{','.join(f'{s:g}' for s in args.scales)}, {args.seeds} seed(s); {len(runs)} distinct runs, "
          f"{len(runs) - len(todo)} cached, {len(todo)} to train{probe}")
    used = [c["steps"] / c["max_steps"] for c in cached.values()]
    typical = (f"; at the cached runs' mean use of {np.mean(used):.0%} of their cap: {bound * np.mean(used) / 60:.0f} min"
               if used else "")
    print(f"estimated time: at most {bound / 60:.0f} min (every run to its cap of {args.max_steps} steps per task, at "
          f"{seconds_per_step:.2f} s/step){typical}", flush=True)
    return bound


def main(argv=None):
    """`m2dino-experiment`: the command line's arguments to `run_experiment`; prints what the study wrote."""
    args, passthrough = parse_arguments(argv)
    report = run_experiment(args, passthrough)
    if not args.dry_run:
        print(report_summary(report, args.output_dir))
    return report


def run_experiment(args, passthrough: list[str]) -> dict:
    """The study `args` describes (`parse_arguments`' settings; `passthrough`: the flags for every run's model and
    Trainer): prints its plan and time estimate, trains the runs not cached yet (one line each), writes the tables
    and figures into `args.output_dir` and returns the report (`write_report`'s). A dry run returns the plan."""
    os.makedirs(args.output_dir, exist_ok=True)
    run_args, base_training = train.parse_arguments([*STUDY_TRAINING_DEFAULTS, *passthrough, "--output_dir", args.output_dir])
    args.settings = study_settings(args, passthrough, run_args)

    advice = None
    groups_files = {"cg": args.groups, "advised": args.advised_groups}
    paradigm_models = {}
    for paradigm in args.paradigms:
        if paradigm == "advised" and not args.advised_groups and not args.dry_run:
            advice = run_advisor(args, args.tasks)
            groups_files["advised"] = advice["groups_file"]
        if paradigm == "advised" and not groups_files["advised"]:
            continue  # a dry run does not start the advisor's probe
        paradigm_models[paradigm] = models_of(paradigm, args.tasks, groups_files.get(paradigm))
    seeds = list(range(args.seeds))
    runs = study.plan_study(paradigm_models, args.scales, seeds)
    cache = study.RunCache(os.path.join(args.output_dir, "runs"))
    cached = {r.key(args.settings): c for r in runs if (c := cache.get(r.key(args.settings))) is not None}
    measured = [c["seconds"] / max(1, c["steps"]) for c in cached.values()]
    seconds_per_step = args.seconds_per_step or (float(np.mean(measured)) if measured else SECONDS_PER_STEP)
    probe = "" if "advised" in paradigm_models or "advised" not in args.paradigms else " (+ the advisor's probe)"
    estimate = print_plan(runs, cached, args, seconds_per_step, probe)
    if args.dry_run:
        return {"runs": runs, "cached": len(cached), "estimated_seconds": estimate}

    if base_training.use_cpu and "OMP_NUM_THREADS" not in os.environ:
        # As m2dino-train does: a core for each data worker, or oversubscribed OpenMP threads spin.
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) - base_training.dataloader_num_workers))
    image_size = run_args.image_size or study._preset_image_size(run_args.preset)
    data = study.load_study_data(args.data, image_size, args.data_seed, args.settings["suite_scale"], synthetic_tasks(args.tasks))
    results = {}
    started = time.time()
    for number, spec in enumerate(runs, 1):
        key = spec.key(args.settings)
        result = cache.get(key)
        if result is None:
            _, training_args = train.parse_arguments(
                [*STUDY_TRAINING_DEFAULTS, *passthrough, "--output_dir", os.path.join(cache.root, key)])
            result = study.train_run(spec, data, run_args, training_args, fraction_of(args, spec.scale),
                                     {"eval_every": spec.eval_period(args.eval_every), "patience": args.patience,
                                      "min_delta": args.min_delta, "max_steps": spec.step_cap(args.max_steps)})
            result["paradigms"] = spec.paradigms
            cache.put(key, result)
            print(f"[{number}/{len(runs)}] {'+'.join(spec.tasks)} x{spec.scale:g} seed {spec.seed}: {result['steps']} steps "
                  f"(stopped by {result['stopped_by']}), test score {result['test_score']:.3f}, "
                  f"{result['seconds']:.0f} s; {(time.time() - started) / 60:.1f} min so far", flush=True)
        results[key] = result
    return write_report(args, runs, results, advice)


def write_report(args, runs, results: dict, advice: dict | None) -> dict:
    seeds = list(range(args.seeds))
    per_run, run_rows = {}, []
    for spec in runs:
        result = results[spec.key(args.settings)]
        for paradigm, name in spec.paradigms:
            per_run.setdefault((paradigm, spec.scale, spec.seed), {}).update(result["results"])
            run_rows.append({"paradigm": paradigm, "model": name, "tasks": " ".join(spec.tasks), "scale": spec.scale,
                             "seed": spec.seed, "steps": result["steps"], "stopped_by": result["stopped_by"],
                             "best_step": result["best_step"], "max_steps": result["max_steps"],
                             "best_val_score": result["best_val_score"], "test_score": result["test_score"],
                             "seconds": round(result["seconds"], 1), "cache_key": spec.key(args.settings)})
    paradigms = [p for p in args.paradigms if any(k[0] == p for k in per_run)]
    rows = study.task_rows(per_run, paradigms, args.scales, seeds)
    by_group = study.summary_rows(rows, "group", paradigms, args.scales)
    by_type = study.summary_rows(rows, "type", paradigms, args.scales)
    study_seconds = float(sum(r["seconds"] for r in results.values()))
    summary = {"settings": args.settings, "tasks": args.tasks, "paradigms": paradigms, "scales": args.scales,
               "seeds": seeds, "runs": len(runs), "study_seconds": study_seconds,
               "runs_stopped_by_patience": sum(r["stopped_by"] == "patience" for r in results.values()),
               "runs_at_cap": sum(r["stopped_by"] == "cap" for r in results.values()),
               "stopped_by_per_paradigm": {p: {how: sum(r["paradigm"] == p and r["stopped_by"] == how for r in run_rows)
                                               for how in ("patience", "cap")} for p in paradigms},
               "mean_change_norm": {p: float(np.mean([r[f"{p.upper()}-TS_norm"] for r in rows])) for p in paradigms if p != "ts"}}
    if advice is not None or args.advised_groups:
        summary["advised_groups_file"] = advice["groups_file"] if advice else os.path.abspath(args.advised_groups)
        if advice is not None:
            summary["probe_seconds"] = float(advice["cost_seconds"])
            summary["probe_fraction_of_study"] = float(advice["cost_seconds"]) / max(study_seconds, 1e-9)
    out = args.output_dir
    write_csv(os.path.join(out, "runs.csv"), run_rows)
    write_csv(os.path.join(out, "per_task.csv"), study.csv_rows(rows))
    write_csv(os.path.join(out, "per_group.csv"), by_group)
    write_csv(os.path.join(out, "per_type.csv"), by_type)
    with open(os.path.join(out, "per_task.json"), "w", encoding="utf-8") as f:
        json.dump({"summary": summary, "tasks": study.csv_rows(rows), "runs": run_rows}, f, indent=2)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    study.plot_study(rows, by_type, by_group, paradigms, out)
    return {"rows": rows, "by_group": by_group, "by_type": by_type, "runs": run_rows, "summary": summary}


def report_summary(report: dict, output_dir: str) -> str:
    """One line: the files `write_report` wrote, how the runs stopped, and the mean change over TS per paradigm."""
    summary = report["summary"]
    changes = ", ".join(f"{p.upper()}-TS {v:+.3f}" for p, v in summary["mean_change_norm"].items())
    probe = (f"; the advisor's probe cost {summary['probe_fraction_of_study']:.1%} of the study"
             if "probe_fraction_of_study" in summary else "")
    return (f"wrote {output_dir}/runs.csv, per_task.csv, per_group.csv, per_type.csv, summary.json and four figures; "
            f"{summary['runs']} runs, {summary['runs_stopped_by_patience']} stopped by patience, {summary['runs_at_cap']} "
            f"at the cap; mean normalised change {changes}{probe}")


def write_csv(path: str, rows: list[dict]):
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
