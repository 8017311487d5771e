"""m2dino-experiment's study protocol: early stopping, subsampling, the normalised change, the run cache and
groups files. Only one test trains (a few tiny models); the others replace training with a stand-in."""

import csv
import json
import os
from types import SimpleNamespace
import math

import pytest
import torch
from transformers import TrainerControl, TrainerState

from m2dino_training import experiment, study, train
from m2dino_training.data.synthetic import SyntheticUltrasoundSuite

FAST = ["--preset", "tiny", "--image_size", "32", "--synthetic_scale", "0.02", "--per_device_train_batch_size", "8",
        "--dataloader_num_workers", "0", "--eval_examples_per_task", "6"]


# ----------------------------------------------------------------------------------------------
# early stopping
# ----------------------------------------------------------------------------------------------


def drive(stopper, scores, eval_every, max_steps, model=None):
    """Feeds `scores` to the callback as the Trainer would, one evaluation per `eval_every` steps; returns the
    step at which training stopped."""
    state, control = TrainerState(max_steps=max_steps), TrainerControl()
    scores = iter(scores)
    for step in range(1, max_steps + 1):
        state.global_step = step
        control = stopper.on_step_end(None, state, control)
        if control.should_evaluate:
            control.should_evaluate = False
            if model is not None:
                with torch.no_grad():
                    model.weight.fill_(step)  # the weights at each evaluation are recognisable by its step
            control = stopper.on_evaluate(None, state, control, metrics={"eval_score": next(scores)}, model=model)
        if control.should_training_stop:
            return step
    return max_steps


def test_early_stopping_stops_after_patience_evaluations_without_improvement_and_restores_the_best():
    model = torch.nn.Linear(2, 2)
    stopper = study.EarlyStopping(eval_every=5, patience=3)
    stopped_at = drive(stopper, [0.1, 0.3, 0.2, 0.3, 0.25, 0.9], eval_every=5, max_steps=100, model=model)
    assert stopped_at == 25  # best at step 10, then 15, 20 and 25 bring nothing better (an equal score is no gain)
    assert stopper.stopped_by == "patience"
    assert (stopper.best_step, stopper.best_score) == (10, 0.3)
    assert [step for step, _ in stopper.history] == [5, 10, 15, 20, 25]
    stopper.restore_best(model)
    assert torch.all(model.weight == 10)


def test_early_stopping_runs_to_the_cap_while_the_score_improves_and_evaluates_at_the_cap():
    stopper = study.EarlyStopping(eval_every=4, patience=1)
    stopped_at = drive(stopper, [0.1, 0.2, 0.3, 0.4], eval_every=4, max_steps=10)
    assert stopped_at == 10 and stopper.stopped_by == "cap"
    assert [step for step, _ in stopper.history] == [4, 8, 10]  # the cap is evaluated even off the period
    assert stopper.best_step == 10


def test_early_stopping_min_delta_and_invalid_settings():
    stopper = study.EarlyStopping(eval_every=1, patience=2, min_delta=0.05)
    assert drive(stopper, [0.5, 0.54, 0.549, 0.7], eval_every=1, max_steps=10) == 3  # +0.04, +0.049: no gain
    with pytest.raises(ValueError, match="patience"):
        study.EarlyStopping(eval_every=10, patience=0)


def test_early_stopping_on_the_unclipped_validation_score_sees_progress_below_the_baseline():
    def regression(mre):  # a regression task at a mean-point baseline MRE of 10 pixels
        return {"type": "regression", "metrics": {"MRE": mre}, "baseline": {"MRE": 10.0}}

    evaluations = iter([15.0, 12.0, 11.0, 9.0])  # worse than the baseline until the last evaluation

    def validation(metrics):
        return study.validation_score({"tasks": {"FUGC": regression(next(evaluations))}})

    stopper = study.EarlyStopping(eval_every=1, patience=1, score=validation)
    assert drive(stopper, [0.0] * 4, eval_every=1, max_steps=4) == 4  # the clipped eval_score (0.0) would stop at 2
    assert stopper.best_step == 4 and stopper.best_score == pytest.approx(0.1)
    assert [round(s, 3) for _, s in stopper.history] == [-0.5, -0.2, -0.1, 0.1]


# ----------------------------------------------------------------------------------------------
# data scale
# ----------------------------------------------------------------------------------------------


def test_subsample_is_a_deterministic_function_of_task_scale_and_seed_nested_across_scales():
    small, medium, full = (study.subsample_indices("fetal_head", 200, f, seed=1) for f in (0.1, 0.3, 1.0))
    assert (len(small), len(medium), full) == (20, 60, list(range(200)))
    assert set(small) <= set(medium) and small == sorted(small)
    assert small == study.subsample_indices("fetal_head", 200, 0.1, seed=1)
    assert small != study.subsample_indices("fetal_head", 200, 0.1, seed=2)
    assert small != study.subsample_indices("breast_lesion", 200, 0.1, seed=1)
    assert len(study.subsample_indices("lung", 10, 0.1, seed=0)) == study.MIN_TRAIN_EXAMPLES
    with pytest.raises(ValueError, match="lung: a subsampling fraction must lie in"):
        study.subsample_indices("lung", 10, 1.5, seed=0)


def test_every_paradigm_trains_a_task_on_the_same_subsample():
    source = SyntheticUltrasoundSuite(scale=0.3, image_size=32, seed=0).dataset("train")
    alone = study.ScaledTaskSubset(source, ["breast_2cls"], 0.3, seed=4)
    group = study.ScaledTaskSubset(source, ["breast_2cls", "breast_lesion"], 0.3, seed=4)
    everything = study.ScaledTaskSubset(source, ["FUGC", "breast_2cls", "lung", "breast_lesion"], 0.3, seed=4)
    kept = alone.source_indices("breast_2cls")
    assert kept == group.source_indices("breast_2cls") == everything.source_indices("breast_2cls")
    assert group.source_indices("breast_lesion") == everything.source_indices("breast_lesion")
    available = [i for i in range(len(source)) if source.task_of(i) == "breast_2cls"]
    assert len(kept) == round(0.3 * len(available)) and set(kept) <= set(available)
    assert all(everything.task_of(k) == source.task_of(everything.indices[k]) for k in range(len(everything)))
    assert study.ScaledTaskSubset(source, ["breast_2cls"], 0.3, seed=5).source_indices("breast_2cls") != kept


# ----------------------------------------------------------------------------------------------
# normalised change and confidence intervals
# ----------------------------------------------------------------------------------------------


def result(task_type, value, baseline=None):
    metric = {"segmentation": "DSC", "classification": "F1_macro", "detection": "IoU", "regression": "MRE"}[task_type]
    out = {"type": task_type, "metrics": {metric: value}, "n_train": 10}
    if baseline is not None:
        out["baseline"] = {metric: baseline}
    return out


def test_normalised_change_is_in_normalised_score_points_and_positive_when_better():
    assert study.normalised_change(result("segmentation", 0.7), result("segmentation", 0.5)) == pytest.approx(0.2)
    assert study.normalised_change(result("classification", 0.4), result("classification", 0.6)) == pytest.approx(-0.2)
    # MRE: 1 - MRE / baseline MRE, so halving the error of a model at the baseline's half gains 0.25
    assert study.normalised_change(result("regression", 5.0, 20.0), result("regression", 10.0, 20.0)) == pytest.approx(0.25)
    # below the baseline the scale is not clipped: 30 px against 40 px still counts as a gain
    assert study.normalised_change(result("regression", 30.0, 20.0), result("regression", 40.0, 20.0)) == pytest.approx(0.5)
    assert study.raw_improvement("regression", 5.0, 10.0) == 5.0 and study.raw_improvement("detection", 0.2, 0.5) == -0.3


def test_ci95_is_the_t_interval_over_seeds():
    mean, low, high = study.ci95([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd = 1
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert math.isnan(study.ci95([0.3])[1])


def test_task_rows_and_summaries_pair_seeds_and_average_tasks_per_seed():
    per_run = {}
    for seed, (ts_dsc, cg_dsc, ts_mre, cg_mre) in enumerate([(0.5, 0.6, 10.0, 12.0), (0.4, 0.7, 10.0, 8.0)]):
        per_run[("ts", 1.0, seed)] = {"breast_lesion": result("segmentation", ts_dsc), "FUGC": result("regression", ts_mre, 20.0)}
        per_run[("cg", 1.0, seed)] = {"breast_lesion": result("segmentation", cg_dsc), "FUGC": result("regression", cg_mre, 20.0)}
    rows = study.task_rows(per_run, ["ts", "cg"], [1.0], [0, 1])
    by_task = {r["task"]: r for r in rows}
    assert by_task["breast_lesion"]["CG-TS_norm"] == pytest.approx((0.1 + 0.3) / 2)
    assert by_task["FUGC"]["CG-TS_norm"] == pytest.approx((-0.1 + 0.1) / 2)
    assert by_task["FUGC"]["CG-TS_raw"] == pytest.approx(0.0) and by_task["FUGC"]["TS_mean"] == 10.0
    assert by_task["breast_lesion"]["CG-TS_norm_ci_low"] < 0.2 < by_task["breast_lesion"]["CG-TS_norm_ci_high"]
    by_type = {r["type"]: r for r in study.summary_rows(rows, "type", ["ts", "cg"], [1.0])}
    assert by_type["segmentation"]["change_norm"] == pytest.approx(0.2)
    by_group = study.summary_rows(rows, "group", ["ts", "cg"], [1.0])
    assert {(r["group"], r["tasks"]) for r in by_group} == {("breast", 1), ("obstetrics", 1)}


# ----------------------------------------------------------------------------------------------
# the study: plan, cache and resume, groups files (training replaced by a stand-in)
# ----------------------------------------------------------------------------------------------


class StandInTraining:
    """Replaces `study.train_run`: a result per task that depends on the run's tasks and seed, and a stop on demand."""

    def __init__(self, fail_after=None):
        self.calls, self.protocols, self.fail_after = [], [], fail_after

    def __call__(self, spec, data, run_args, training_args, fraction, protocol):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt("the study was killed")
        self.calls.append((spec.tasks, spec.scale, spec.seed, fraction))
        self.protocols.append(protocol)
        values = {t: 0.3 + 0.1 * len(spec.tasks) + 0.01 * spec.seed for t in spec.tasks}
        types = {"breast_2cls": "classification", "lung": "segmentation", "fetal_head": "segmentation",
                 "FUGC": "regression"}
        return {"tasks": list(spec.tasks), "steps": 20, "stopped_by": "patience", "best_step": 10, "best_val_score": 0.5,
                "max_steps": protocol["max_steps"], "seconds": 2.0, "test_score": 0.5,
                "results": {t: {**result(types[t], values[t] * (10 if types[t] == "regression" else 1), 8.0),
                                "group": "x", "n_train": int(100 * fraction)} for t in spec.tasks}}


STUDY = ["--tasks", "breast_2cls", "lung", "FUGC", "--paradigms", "ts,cg,au", "--scales", "0.5,1", "--seeds", "2", "--max_steps", "50"]


def test_every_model_is_evaluated_and_capped_per_task_and_a_single_task_key_ignores_that(tmp_path, monkeypatch):
    training = StandInTraining()
    monkeypatch.setattr(study, "train_run", training)
    experiment.main([*STUDY, "--eval_every", "7", "--output_dir", str(tmp_path), *FAST])
    for (tasks, *_), protocol in zip(training.calls, training.protocols):
        assert (protocol["eval_every"], protocol["max_steps"]) == (7 * len(tasks), 50 * len(tasks))
    settings = {"eval_every": 7, "patience": 3}
    alone, pair = study.RunSpec(("lung",), 1.0, 0), study.RunSpec(("lung", "FUGC"), 1.0, 0)
    assert alone.key(settings) == study.RunSpec(("lung",), 1.0, 0).key({**settings})
    assert pair.key(settings) != pair.key({**settings, "eval_every": 14})  # the hash holds the run's own period
    assert pair.key({**settings, "eval_every": 7}) != study.RunSpec(("lung", "FUGC"), 1.0, 0).key({**settings, "eval_every": 8})


def test_a_killed_study_resumes_without_training_a_finished_run_again(tmp_path, monkeypatch, capsys):
    argv = [*STUDY, "--output_dir", str(tmp_path), *FAST]
    killed = StandInTraining(fail_after=5)
    monkeypatch.setattr(study, "train_run", killed)
    with pytest.raises(KeyboardInterrupt):
        experiment.main(argv)
    plan = experiment.main([*argv, "--dry_run"])
    distinct = len(plan["runs"])
    assert distinct == 4 * 4  # per (scale, seed): TS x3 (CG's three single-task groups are the same runs), AU
    assert plan["cached"] == 5
    assert "5 cached" in capsys.readouterr().out

    resumed = StandInTraining()
    monkeypatch.setattr(study, "train_run", resumed)
    report = experiment.main(argv)
    assert len(resumed.calls) == distinct - 5
    assert not set(resumed.calls) & set(killed.calls)
    assert len({(c[0], c[1], c[2]) for c in killed.calls + resumed.calls}) == distinct

    again = StandInTraining()
    monkeypatch.setattr(study, "train_run", again)
    assert experiment.main(argv)["rows"] == report["rows"] and again.calls == []
    # a setting that defines a run (here the patience) makes every run new
    experiment.main([*argv, "--patience", "7"])
    assert len(again.calls) == distinct


def test_the_report_gives_every_run_its_steps_and_stop_and_the_same_data_to_every_paradigm(tmp_path, monkeypatch, capsys):
    stand_in = StandInTraining()
    monkeypatch.setattr(study, "train_run", stand_in)
    plan = experiment.main([*STUDY, "--output_dir", str(tmp_path), "--dry_run", "--seconds_per_step", "2", *FAST])
    assert plan["estimated_seconds"] == 4 * (3 * 50 + 3 * 50) * 2  # per (scale, seed): TS x3 at 50 steps, AU at 150
    assert "16 distinct runs, 0 cached, 16 to train" in capsys.readouterr().out and stand_in.calls == []
    report = experiment.main([*STUDY, "--output_dir", str(tmp_path), *FAST])
    # CG's groups here hold one task each (breast, lung, obstetrics): TS runs, trained once, reported under both
    per_combo = 3 + 3 + 1
    assert len(stand_in.calls) == 4 * 4
    assert {c[3] for c in stand_in.calls} == {0.5, 1.0}  # the suite is generated at the largest scale
    with open(tmp_path / "runs.csv", encoding="utf-8") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 4 * per_combo
    assert {(r["steps"], r["stopped_by"]) for r in runs} == {("20", "patience")}
    assert all(int(r["max_steps"]) == 50 * len(r["tasks"].split()) for r in runs)  # the cap is per task
    for row in report["rows"]:
        assert row["n_train"] == 100 * row["scale"]
        assert {"TS_mean", "CG_mean", "AU_mean", "baseline", "CG-TS_norm", "AU-TS_norm", "AU-TS_norm_ci_low", "AU-TS_raw"} <= set(row)
    au = {r["task"]: r for r in report["rows"] if r["scale"] == 1.0}["lung"]
    assert au["AU-TS_norm"] == pytest.approx(0.2)  # three tasks against one: 0.1 per extra task in the stand-in
    for name in ("per_task.csv", "per_group.csv", "per_type.csv", "summary.json", "change_vs_size.png",
                 "per_group_change.png", "per_type_change.png", "per_task_change.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_a_resumed_study_reuses_the_advisors_probe_of_the_same_request(tmp_path, monkeypatch):
    from m2dino_training import advise as advise_module

    calls = []

    def probe(data, tasks, seed, output_dir):
        calls.append(list(tasks))
        os.makedirs(output_dir, exist_ok=True)
        report = {"groups": {"all": list(tasks)}, "cost_seconds": 5.0, "tasks": list(tasks)}
        with open(os.path.join(output_dir, advise_module.REPORT_FILE), "w") as f:
            json.dump(report, f)
        return report

    monkeypatch.setattr(advise_module, "advise", probe)
    monkeypatch.setattr(advise_module, "regroup", lambda report, folder: {**report, "regrouped": True})
    args = SimpleNamespace(output_dir=str(tmp_path), settings={"data": "synthetic"})
    first = experiment.run_advisor(args, ["FUGC", "lung"])
    assert experiment.run_advisor(args, ["FUGC", "lung"]) == {**first, "regrouped": True} and calls == [["FUGC", "lung"]]
    experiment.run_advisor(args, ["FUGC", "breast_2cls"])  # another request probes again
    assert calls == [["FUGC", "lung"], ["FUGC", "breast_2cls"]]


def test_groups_files_round_trip_into_cg_and_advised_and_the_probe_cost_is_reported(tmp_path, monkeypatch):
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"pair": ["breast_2cls", "lung"], "alone": ["FUGC"]}))
    tasks = ["FUGC", "breast_2cls", "lung"]
    expected = train.plan_runs(train.M2DinoRunArguments(paradigm="cg", groups=str(groups)), tasks, list(train.FMC_UIA_TASKS))
    assert experiment.models_of("advised", tasks, str(groups)) == expected == [("pair", ["breast_2cls", "lung"]), ("alone", ["FUGC"])]

    monkeypatch.setattr(study, "train_run", StandInTraining())
    monkeypatch.setattr(experiment, "run_advisor", lambda args, tasks: {"groups": {}, "groups_file": str(groups), "cost_seconds": 3.0})
    report = experiment.main([*STUDY, "--paradigms", "ts,cg,au,advised", "--output_dir", str(tmp_path / "s"), *FAST])
    advised = [r for r in report["runs"] if r["paradigm"] == "advised"]
    assert {r["tasks"] for r in advised} == {"breast_2cls lung", "FUGC"}
    summary = report["summary"]
    assert summary["probe_fraction_of_study"] == pytest.approx(3.0 / summary["study_seconds"])
    assert "ADVISED-TS_norm" in report["rows"][0]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": ["breast_2cls", "lung"], "b": ["lung", "FUGC"]}))
    with pytest.raises(SystemExit, match=r"bad.json: tasks in two groups \['lung'\]"):
        experiment.main([*STUDY, "--paradigms", "ts,advised", "--advised_groups", str(bad), "--dry_run",
                         "--output_dir", str(tmp_path / "b")])


def test_arguments_are_checked_with_the_flag_named(tmp_path):
    out = ["--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit, match="--paradigms"):
        experiment.main(["--paradigms", "cg,au", "--dry_run", *out])
    with pytest.raises(SystemExit, match="--paradigms ts: ts and at least one"):
        experiment.main(["--paradigms", "ts", "--dry_run", *out])
    with pytest.raises(SystemExit, match="--scales"):
        experiment.main(["--data", str(tmp_path), "--scales", "0.5,2", "--dry_run", *out])
    with pytest.raises(SystemExit, match="--tasks: unknown task"):
        experiment.main(["--tasks", "no_such_task", "--dry_run", *out])
    with pytest.raises(SystemExit, match="--seed and --max_steps are set by the study"):
        experiment.main(["--seed", "3", "--dry_run", *out])


# ----------------------------------------------------------------------------------------------
# one real study, tiny
# ----------------------------------------------------------------------------------------------


def test_a_tiny_study_trains_early_stopped_models_and_writes_every_table_and_figure(tmp_path):
    # min_delta 2 makes every evaluation after the first a non-improvement: each run stops by patience at
    # step k * eval_every * (1 + patience) (4 for a model of one task, 8 for the AU model of two), whatever it
    # learns, and keeps the weights of its first evaluation.
    report = experiment.main(["--tasks", "breast_2cls", "lung", "--paradigms", "ts,cg,au", "--scales", "1", "--seeds", "2", "--max_steps", "10",
                              "--eval_every", "2", "--patience", "1", "--min_delta", "2", "--output_dir", str(tmp_path), *FAST])
    assert {(len(r["tasks"].split()), r["steps"], r["stopped_by"], r["best_step"]) for r in report["runs"]} == \
        {(1, 4, "patience", 2), (2, 8, "patience", 4)}
    assert report["summary"]["stopped_by_per_paradigm"]["au"] == {"patience": 2, "cap": 0}
    assert len({r["cache_key"] for r in report["runs"]}) == 2 * 3  # TS x2 (= CG's single-task groups), AU
    cached = {len(r["tasks"]): r for r in (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/result.json"))}
    assert [step for step, _ in cached[1]["val_history"]] == [2, 4] and [step for step, _ in cached[2]["val_history"]] == [4, 8]
    cached = cached[1]
    assert cached["data"]["stop_split"] == "val" and cached["data"]["report_split"] == "test"
    assert {r["task"] for r in report["rows"]} == {"breast_2cls", "lung"}
    for name in ("runs.csv", "per_task.csv", "per_task.json", "per_group.csv", "per_type.csv", "change_vs_size.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_on_the_synthetic_suite_a_scale_above_one_is_generated(tmp_path, monkeypatch):
    stand_in = StandInTraining()
    monkeypatch.setattr(study, "train_run", stand_in)
    report = experiment.main(["--tasks", "lung", "--paradigms", "ts,au", "--scales", "1,2", "--seeds", "1",
                              "--output_dir", str(tmp_path), *FAST])
    assert report["summary"]["settings"]["suite_scale"] == pytest.approx(0.04)  # --synthetic_scale 0.02 x 2
    assert sorted(c[3] for c in stand_in.calls) == [0.5, 1.0]
    data = study.load_study_data("synthetic", 32, 0, 0.04, list(train.FMC_UIA_TASKS))
    at_one = study.ScaledTaskSubset(data.train, ["fetal_head"], 0.5, seed=0)
    at_two = study.ScaledTaskSubset(data.train, ["fetal_head"], 1.0, seed=0)
    base = SyntheticUltrasoundSuite(scale=0.02, image_size=32, seed=0).size("fetal_head", "train")
    assert len(at_two) == SyntheticUltrasoundSuite(scale=0.04, image_size=32, seed=0).size("fetal_head", "train") > base
    assert len(at_one) == round(len(at_two) / 2) and set(at_one.indices) < set(at_two.indices)


def test_a_folder_without_a_test_split_is_reported_on_val_and_says_so(tmp_path, monkeypatch):
    folder = tmp_path / "fmc_uia"
    SyntheticUltrasoundSuite(scale=0.05, image_size=32, seed=1, tasks=["breast_2cls", "fetal_head"]).write_challenge_layout(folder)
    data = study.load_study_data(str(folder), 32, 0, 1.0, list(train.FMC_UIA_TASKS))
    assert (data.description["stop_split"], data.description["report_split"]) == ("val", "val")
    subset = study.ScaledTaskSubset(data.train, ["fetal_head"], 0.5, seed=0)
    assert len(subset) == round(0.5 * len(study.examples_positions(data.train, "fetal_head")))
    seen = []
    stand_in = StandInTraining()

    def recording(spec, data, *rest):
        seen.append(data.description["source"])
        return stand_in(spec, data, *rest)

    monkeypatch.setattr(study, "train_run", recording)
    report = experiment.main(["--data", str(folder), "--tasks", "breast_2cls", "fetal_head", "--paradigms", "ts,au",
                              "--scales", "0.5,1", "--seeds", "1", "--output_dir", str(tmp_path / "s"), *FAST])
    assert set(seen) == {str(folder)} and report["summary"]["settings"]["data"] == str(folder)
    assert sorted({c[3] for c in stand_in.calls}) == [0.5, 1.0]  # a folder's scales are its fractions


def test_the_command_prints_what_the_library_function_returns(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study, "train_run", StandInTraining())
    args, passthrough = experiment.parse_arguments([*STUDY, "--output_dir", str(tmp_path / "library"), *FAST])
    report = experiment.run_experiment(args, passthrough)  # trains, writes the files, prints progress only
    progress = capsys.readouterr().out
    assert "wrote " not in progress and (tmp_path / "library" / "summary.json").exists()
    summary = experiment.report_summary(report, str(tmp_path / "library"))
    assert summary.startswith(f"wrote {tmp_path / 'library'}/runs.csv") and "16 runs, 16 stopped by patience" in summary
    command = experiment.main([*STUDY, "--output_dir", str(tmp_path / "library"), *FAST])  # every run cached now
    assert command["rows"] == report["rows"] and capsys.readouterr().out.rstrip().endswith(summary)
