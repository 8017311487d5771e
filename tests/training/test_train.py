"""m2dino-train, -evaluate, -predict and -score, run in-process at 32 px with a few steps."""

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForSemanticSegmentation, TrainerCallback

import modeling_m2dino as m2dino
from m2dino_training import evaluate, predict, score, train
from m2dino_training.data.synthetic import SyntheticUltrasoundSuite
from m2dino_training.trainer import NonFiniteLossError

FAST = ["--preset", "tiny", "--image_size", "32", "--synthetic_scale", "0.02", "--per_device_train_batch_size", "8",
        "--dataloader_num_workers", "0", "--eval_examples_per_task", "6", "--logging_steps", "1", "--disable_tqdm", "true"]
ONE_PER_TYPE = ["cervix_multi", "breast_3cls", "thyroid_nodule_det", "IUGC"]
# The challenge's figures under its names, and the extra ones (HD95, AP50) m2dino keeps beside them.
METRIC_KEYS = {"segmentation": {"DSC", "HD", "HD95", "class_0_DSC", "class_1_HD"},
               "classification": {"Accuracy", "AUC", "F1_macro", "F1_weighted", "MCC", "class_0_F1"},
               "detection": {"IoU", "AP50"}, "regression": {"MRE", "point_1_MRE"}}


@pytest.fixture(scope="session")
def trained_au(tmp_path_factory):
    """`m2dino-train --paradigm au --data synthetic --preset tiny --max_steps 5`, shared by the tests below."""
    out = tmp_path_factory.mktemp("au") / "m2dino"
    results = train.main(["--paradigm", "au", "--data", "synthetic", "--max_steps", "5", "--output_dir", str(out), *FAST])
    return out, results["all"]


@pytest.fixture(scope="session")
def challenge_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("layout") / "fmc_uia"
    SyntheticUltrasoundSuite(scale=0.02, image_size=48, seed=3, tasks=ONE_PER_TYPE).write_challenge_layout(out)
    return out


def test_au_run_writes_a_folder_the_auto_classes_load(trained_au):
    out, results = trained_au
    assert type(AutoModel.from_pretrained(out)) is m2dino.M2DinoModel
    segmenter = AutoModelForSemanticSegmentation.from_pretrained(out)
    assert len(segmenter.served_tasks) == 12
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["score"] == pytest.approx(results["score"]) and saved["paradigm"] == "au"
    assert len(saved["tasks"]) == 27
    for task_id, result in saved["tasks"].items():
        assert METRIC_KEYS[result["type"]] <= set(result["metrics"]), task_id
        assert {"baseline", "difference", "n_train", "n_eval"} <= set(result)
    assert (out / "README.md").exists() and (out / "preprocessor_config.json").exists()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt")), "only safetensors and JSON in a model folder"
    log = json.loads((out / "train_log.json").read_text())
    assert any("router_loss" in entry and any(k.startswith("loss_") for k in entry) for entry in log)


def test_output_folder_with_a_model_is_refused_without_overwrite(trained_au):
    out, _ = trained_au
    with pytest.raises(SystemExit, match="--overwrite"):
        train.main(["--data", "synthetic", "--max_steps", "1", "--output_dir", str(out), "--tasks", "lung", *FAST])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--paradigm", "xx"], "unknown paradigm 'xx'; valid: ts, cg, au"),
        (["--tasks", "lung", "nope"], r"unknown task\(s\).*\['nope'\]; valid: FUGC"),
        (["--sampler", "random"], "unknown sampler"),
    ],
)
def test_bad_arguments_are_named(tmp_path, extra, message):
    with pytest.raises(SystemExit, match=message):
        train.main(["--data", "synthetic", "--max_steps", "1", "--output_dir", str(tmp_path / "x"), *FAST, *extra])


@pytest.mark.parametrize("groups, message", [({"a": ["lung"], "b": ["lung", "breast_2cls"]}, r"two groups \['lung'\]"),
                                             ({"a": ["lung"]}, r"no group \['breast_2cls'\]")])
def test_groupings_that_repeat_or_leave_out_tasks_are_refused(tmp_path, groups, message):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps(groups))
    with pytest.raises(SystemExit, match=message):
        train.main(["--paradigm", "cg", "--groups", str(path), "--tasks", "lung", "breast_2cls", "--data", "synthetic",
                    "--max_steps", "1", "--output_dir", str(tmp_path / "x"), *FAST])


def test_ts_run_saves_one_folder_per_task(tmp_path):
    train.main(["--paradigm", "ts", "--tasks", "lung", "breast_2cls", "--data", "synthetic", "--max_steps", "2",
                "--output_dir", str(tmp_path), *FAST])
    for task in ("lung", "breast_2cls"):
        model = m2dino.M2DinoForMultiTask.from_pretrained(tmp_path / f"ts_{task}")
        assert model.served_tasks == [task]
        assert (tmp_path / f"ts_{task}" / "eval_results.json").exists()


def test_main_job_table_reports_the_challenge_metrics_and_the_ci_per_task(trained_au):
    out, _ = trained_au
    saved = json.loads((out / "eval_results.json").read_text())
    table = evaluate.results_table(saved).splitlines()
    assert table[0].startswith("| task | type | n | challenge metrics | primary | model | baseline | diff 95% CI |")
    rows = {line.split(" | ")[0].strip("| "): line for line in table[2:] if line.startswith("| ")}
    assert set(rows) == set(saved["tasks"])
    figures = {"segmentation": ("DSC ", "HD "), "classification": ("Accuracy ", "AUC ", "F1_macro ", "F1_weighted ", "MCC "),
               "detection": ("IoU ",), "regression": ("MRE ",)}
    for task_id, result in saved["tasks"].items():
        cells = rows[task_id].split(" | ")
        assert all(name in cells[3] for name in figures[result["type"]]), rows[task_id]
        diff = result["difference"]
        assert cells[7] == f"[{diff['ci95_lower']:+.3f}, {diff['ci95_upper']:+.3f}]"


def test_predictions_scored_by_m2dino_score_match_evaluate(trained_au, challenge_folder, tmp_path):
    model_dir, _ = trained_au
    results = evaluate.main(["--model", str(model_dir), "--data", str(challenge_folder), "--output", str(tmp_path / "e.json")])
    predict.main(["--model", str(model_dir), "--data", str(challenge_folder / "val"), "--out", str(tmp_path / "pred")])
    scores = score.main(["--data", str(challenge_folder / "val"), "--predictions", str(tmp_path / "pred")])
    assert set(results["tasks"]) == set(ONE_PER_TYPE)
    for task_id, evaluated in results["tasks"].items():
        scored = scores[evaluated["type"]][task_id]
        assert scored["num_samples"] == evaluated["n_eval"]
        for name, value in score.flat_task_result(scored).items():
            assert value == pytest.approx(evaluated["metrics"][name], abs=1e-6, nan_ok=True), (task_id, name)


def test_evaluate_folder_names_what_the_model_or_the_data_lacks(trained_au, challenge_folder):
    model_dir, _ = trained_au
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['nope'\]; the model serves"):
        evaluate.evaluate_folder(str(model_dir), str(challenge_folder), tasks=["nope"])
    # the command stops with the library function's message
    with pytest.raises(SystemExit, match=rf"{challenge_folder} has no split 'nope'; it has \['train', 'val'\]"):
        evaluate.main(["--model", str(model_dir), "--data", str(challenge_folder), "--split", "nope"])


class PoisonHeadsAt(TrainerCallback):
    """Turns every head weight into NaN right after a checkpoint, as a diverging run would."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                for parameter in model.heads.parameters():
                    parameter.fill_(float("nan"))


def test_non_finite_loss_stops_naming_task_and_step_and_keeps_the_checkpoint(tmp_path):
    argv = ["--data", "synthetic", "--tasks", "breast_3cls", "--max_steps", "6", "--save_strategy", "steps",
            "--save_steps", "2", "--output_dir", str(tmp_path), *FAST]
    with pytest.raises(NonFiniteLossError, match=r"loss_breast_3cls is nan at step 3"):
        train.main(argv, callbacks=[PoisonHeadsAt(2)])
    checkpoint = m2dino.M2DinoForMultiTask.from_pretrained(tmp_path / "checkpoint-2")
    assert all(torch.isfinite(p).all() for p in checkpoint.parameters())
    assert not (tmp_path / ".staging").exists()


def test_console_scripts_exit_zero_after_a_successful_run(trained_au, challenge_folder, tmp_path, monkeypatch):
    from importlib.metadata import entry_points

    from m2dino_training import cli

    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name.startswith("m2dino-")}
    assert set(scripts) == set(cli.COMMANDS)
    model_dir, _ = trained_au
    monkeypatch.setattr("sys.argv", ["m2dino-evaluate", "--model", str(model_dir), "--data", str(challenge_folder),
                                     "--output", str(tmp_path / "e.json")])
    with pytest.raises(SystemExit) as exited:  # what the wrapper pip writes does
        raise SystemExit(scripts["m2dino-evaluate"].load()())
    assert exited.value.code is None
    assert json.loads((tmp_path / "e.json").read_text())["tasks"].keys() == set(ONE_PER_TYPE)
