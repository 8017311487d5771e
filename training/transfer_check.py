"""A small, reproducible measurement of the synthetic suite's transfer structure: tasks alone versus in pairs.

    python -m m2dino_training.transfer_check --pairs consistent conflicting opposite_meaning

The defaults (five seeds, the suite at scale 0.5, 200 steps per task, batch 16) are those of the measurement in
docs/synthetic.md: long enough that the breast tasks are well trained alone, short enough for the 35
trainings of the three pairs to take about half an hour on 2 cores.

For every seed, every task of the pairs is trained alone (task-specific, TS) and every pair is trained as
one two-task model; each model is scored on `--eval_examples` held-out (test) images per task. The pair
model trains twice the steps of a TS model, with both tasks drawn equally often, so that each task sees the
same number of training images in both settings and a difference is transfer, not training length. Printed
per pair and task: the primary metric of TS and pair per seed, and the mean pair-minus-TS difference (signed
so that positive is better) with its 95% t-interval over seeds. Models are saved under `--output_dir` by
their settings; a model whose `eval_results.json` is there is not trained again (a killed check resumes).

`--pairs` takes the names of `TRANSFER_PAIRS` (docs/synthetic.md, "Transfer by design") or `taskA:taskB`.
Arguments it does not know go to `m2dino-train` unchanged (e.g. `--preset`, `--learning_rate`).
"""

import argparse
import json
import os
import sys

from .data.synthetic import TRANSFER_PAIRS
from .study import ci95, raw_improvement
from .task_types import training_task_type


def parse_pairs(values) -> list[tuple[str, str]]:
    """`TRANSFER_PAIRS` names or `taskA:taskB` -> [(taskA, taskB), ...]."""
    pairs = []
    for value in values:
        if value in TRANSFER_PAIRS:
            pairs.append(tuple(TRANSFER_PAIRS[value]))
        elif value.count(":") == 1 and all(value.split(":")):
            pairs.append(tuple(value.split(":")))
        else:
            raise ValueError(f"--pairs: {value!r} is neither a pair name ({', '.join(TRANSFER_PAIRS)}) nor taskA:taskB")
    return pairs


def verdict(lower: float, upper: float) -> str:
    if lower > 0:
        return "positive transfer"
    if upper < 0:
        return "negative transfer"
    return "no difference shown"


def summarise(scores: dict, pairs, seeds) -> list[dict]:
    """Rows per (pair, task) from `scores[(seed, model tasks)][task] = (primary metric value, task type)`."""
    rows = []
    for pair in pairs:
        for task in pair:
            ts = [scores[(seed, (task,))][task][0] for seed in seeds]
            joint = [scores[(seed, tuple(pair))][task][0] for seed in seeds]
            task_type = scores[(seeds[0], (task,))][task][1]
            mean, lower, upper = ci95([raw_improvement(task_type, j, t) for j, t in zip(joint, ts)])
            rows.append({"pair": "+".join(pair), "task": task, "metric": training_task_type(task_type).primary_metric, "ts": ts,
                         "pair_model": joint, "difference": mean, "ci95": (lower, upper),
                         "verdict": verdict(lower, upper)})
    return rows


def format_rows(rows) -> str:
    lines = ["| pair | task | metric | TS per seed | pair per seed | pair - TS (95% CI over seeds) | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['task']} | {r['metric']} | {', '.join(f'{v:.3f}' for v in r['ts'])} | "
                     f"{', '.join(f'{v:.3f}' for v in r['pair_model'])} | {r['difference']:+.3f} "
                     f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | {r['verdict']} |")
    return "\n".join(lines)


def train_or_load(tasks, seed, args, extra) -> dict:
    """{task: (primary metric, type)} of the model of `tasks` at `seed`, trained unless already saved."""
    name = "+".join(tasks)
    settings = f"scale{args.scale}_px{args.image_size}_steps{args.max_steps}_bs{args.batch_size}_eval{args.eval_examples}"
    folder = os.path.join(args.output_dir, settings, f"seed{seed}", name)
    results_file = os.path.join(folder, "eval_results.json")
    if not os.path.exists(results_file):
        from .train import main as train_main

        argv = ["--paradigm", "au", "--data", "synthetic", "--tasks", *tasks, "--synthetic_scale", str(args.scale),
                "--image_size", str(args.image_size), "--max_steps", str(args.max_steps * len(tasks)),
                "--per_device_train_batch_size", str(args.batch_size), "--task_weighting", "uniform",
                "--eval_examples_per_task", str(args.eval_examples),
                "--seed", str(seed), "--output_dir", folder, "--overwrite", "--disable_tqdm", "true", *extra]
        print(f"training {name} (seed {seed}): m2dino-train {' '.join(argv)}", flush=True)
        train_main(argv)
    with open(results_file, encoding="utf-8") as f:
        results = json.load(f)
    return {task: (r["metrics"][r["primary_metric"]], r["type"]) for task, r in results["tasks"].items()}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m m2dino_training.transfer_check", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="+", default=list(TRANSFER_PAIRS), help="pair names or taskA:taskB")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--scale", type=float, default=0.5, help="synthetic suite scale (training set sizes)")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--max_steps", type=int, default=200, help="steps of a TS model (a pair trains twice as many)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--eval_examples", type=int, default=100, help="held-out test images per task")
    parser.add_argument("--output_dir", default="transfer_check")
    args, extra = parser.parse_known_args(argv)
    try:
        pairs = parse_pairs(args.pairs)
    except ValueError as err:
        parser.error(str(err))
    rows = transfer_check(pairs, args, extra)
    print(format_rows(rows), flush=True)
    return rows


def transfer_check(pairs: list[tuple[str, str]], args, extra: list[str]) -> list[dict]:
    """Trains (or reloads) every task of `pairs` alone and every pair, for each of `args.seeds`, and writes and
    returns the rows of `summarise` (`transfer_check.json` in `args.output_dir`). `args` holds the command's
    settings (seeds, scale, image_size, max_steps, batch_size, eval_examples, output_dir); `extra`: flags for
    `m2dino-train`."""
    models = list(dict.fromkeys([(t,) for pair in pairs for t in pair] + [tuple(pair) for pair in pairs]))
    print(f"plan: {len(models)} models x {len(args.seeds)} seeds ({len(models) * len(args.seeds)} trainings), "
          f"{args.max_steps} steps per task", flush=True)
    scores = {(seed, tasks): train_or_load(list(tasks), seed, args, extra) for seed in args.seeds for tasks in models}
    rows = summarise(scores, pairs, args.seeds)
    with open(os.path.join(args.output_dir, "transfer_check.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
