"""Training runs: one run per output folder, a final save that replaces a model in one step, --overwrite that
keeps the old run's checkpoints until the new model is in, and resumes that refuse another task set."""

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
import torch

import modeling_m2dino as m2dino
from conftest import tiny_config
from m2dino_training import output_folder, train
from m2dino_training.output_folder import LOCK_NAME, OutputFolderBusyError, OutputFolderLock
from m2dino_training.trainer import MultiTaskTrainer, check_resume_tasks
from m2dino_training.training_args import M2DinoTrainingArguments

FAST = ["--preset", "tiny", "--image_size", "32", "--synthetic_scale", "0.02", "--per_device_train_batch_size", "8",
        "--dataloader_num_workers", "0", "--eval_examples_per_task", "4", "--logging_steps", "1", "--disable_tqdm", "true"]
TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]))


# ------------------------------------------------------------------------------------------------------
# The lock


HOLD_LOCK = """
import sys, time
from m2dino_training.output_folder import OutputFolderLock
lock = OutputFolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_refuses_a_second_owner_and_takes_over_a_stale_one(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputFolderBusyError) as caught:
            OutputFolderLock(str(tmp_path)).acquire()
        message = str(caught.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message and str(tmp_path / LOCK_NAME) in message
    finally:
        holder.kill()  # kill -9: the lock file stays behind, naming a dead process
        holder.wait()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
    with caplog.at_level("WARNING"):
        lock = OutputFolderLock(str(tmp_path)).acquire()
    assert f"taking over the stale lock {tmp_path / LOCK_NAME} of pid {holder.pid}" in caplog.text
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    with OutputFolderLock(str(tmp_path)):  # free again
        pass


PAUSED_RUN = """
import os, sys, time
from transformers import TrainerCallback
from m2dino_training import train

class PauseAtFirstStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            open(os.environ["STARTED"], "w").close()
            deadline = time.time() + 120
            while not os.path.exists(os.environ["RESUME"]) and time.time() < deadline:
                time.sleep(0.05)

train.main(sys.argv[1:], callbacks=[PauseAtFirstStep()])
"""


def test_second_run_into_a_busy_folder_fails_at_once_and_the_first_finishes(tmp_path):
    out = tmp_path / "model"
    argv = ["--data", "synthetic", "--tasks", "breast_3cls", "IUGC", "--max_steps", "3", "--output_dir", str(out), *FAST]
    env = dict(_env(), STARTED=str(tmp_path / "started"), RESUME=str(tmp_path / "resume"))
    first = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, *argv], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "started").exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.1)
        started = time.perf_counter()
        with pytest.raises(SystemExit) as caught:
            train.main(argv)
        elapsed = time.perf_counter() - started
        assert isinstance(caught.value.code, str)  # the console script exits 1 with this message
        assert f"{out} is in use by another training run (pid {first.pid}" in caught.value.code
        assert str(out / LOCK_NAME) in caught.value.code
        assert elapsed < 10, elapsed
    finally:
        (tmp_path / "resume").touch()
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    model = m2dino.M2DinoForMultiTask.from_pretrained(out)
    assert sorted(model.served_tasks) == ["IUGC", "breast_3cls"]
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results["tasks"]) == {"breast_3cls", "IUGC"} and results["max_steps"] == 3
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------------------
# The final save


def _model(seed):
    torch.manual_seed(seed)
    return m2dino.M2DinoForMultiTask(tiny_config())


def _save(target, seed, name):
    """save_final_model of a tiny model; results and log name the run, so files of two runs differ."""
    model = _model(seed)
    processor = m2dino.M2DinoImageProcessor.from_config(model.config)
    processor.image_mean = [0.1 * seed] * 3
    train.save_final_model(str(target), model.save_pretrained, processor, {"run": name, "tasks": {}}, [{"run": name}],
                           json.dumps({"run": name}))
    return model


def _top_files(folder):
    """The model as a reader finds it: every top-level file and its content digest."""
    if not os.path.isdir(folder):
        return None
    return {entry.name: hashlib.sha256(open(entry.path, "rb").read()).hexdigest()
            for entry in os.scandir(folder) if entry.is_file() and entry.name != LOCK_NAME}


def _tree(folder):
    return {os.path.relpath(os.path.join(parent, name), folder): open(os.path.join(parent, name), "rb").read()
            for parent, _, names in os.walk(folder) for name in names}


def _old_run(target):
    """A folder with a saved model, a checkpoint of this run, and an old run's set-aside checkpoint."""
    _save(target, seed=1, name="old")
    (target / "checkpoint-2").mkdir()
    (target / "checkpoint-2" / "optimizer.pt").write_bytes(b"this run's optimizer state")
    (target / output_folder.PREVIOUS_CHECKPOINTS / "checkpoint-9").mkdir(parents=True)
    (target / output_folder.PREVIOUS_CHECKPOINTS / "checkpoint-9" / "model.safetensors").write_bytes(b"old")


def test_final_save_shows_the_old_or_the_new_model_at_every_step(tmp_path, monkeypatch):
    target = tmp_path / "model"
    _old_run(target)
    old = _top_files(target)
    seen = []

    def watch(owner, name):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            seen.append((f"before {name}", _top_files(target)))
            result = original(*args, **kwargs)
            seen.append((f"after {name}", _top_files(target)))
            return result

        monkeypatch.setattr(owner, name, wrapped)

    from m2dino_training import cards

    watch(m2dino.M2DinoForMultiTask, "save_pretrained")
    watch(m2dino.M2DinoImageProcessor, "save_pretrained")
    watch(train, "carry_over")
    watch(cards, "write_model_card")
    watch(train, "publish_model_folder")
    watch(output_folder, "_exchange")
    watch(output_folder, "match_permissions")
    new_model = _save(target, seed=2, name="new")
    new = _top_files(target)

    assert old != new and {"model.safetensors", "config.json", "preprocessor_config.json", "eval_results.json",
                           "README.md", "train_log.json", "training_args.json"} <= set(new)
    assert len(seen) >= 12
    states = ["old" if state == old else "new" if state == new else "MIXED" for _, state in seen]
    assert "MIXED" not in states, list(zip([step for step, _ in seen], states))
    assert states[0] == "old" and states[-1] == "new"
    assert states.index("new") == [step for step, _ in seen].index("after _exchange")  # the one step that switches
    # The new folder: the new model, this run's checkpoint kept, the old run's set-aside checkpoints gone.
    loaded = m2dino.M2DinoForMultiTask.from_pretrained(target)
    for key, value in new_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert json.loads((target / "eval_results.json").read_text())["run"] == "new"
    assert (target / "checkpoint-2" / "optimizer.pt").read_bytes() == b"this run's optimizer state"
    assert not (target / output_folder.PREVIOUS_CHECKPOINTS).exists()
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no staging folder left


KILLED_SAVE = """
import os, signal, sys
sys.path.insert(0, os.environ["TESTS_DIR"])
from m2dino_training import output_folder
from test_run_reliability import _save

point = sys.argv[2]
exchange = output_folder._exchange
def exchange_then_maybe_die(first, second):
    if point == "before the swap":
        os.kill(os.getpid(), signal.SIGKILL)
    exchange(first, second)
    if point == "after the swap":
        os.kill(os.getpid(), signal.SIGKILL)
output_folder._exchange = exchange_then_maybe_die
_save(sys.argv[1], seed=2, name="new")
"""


@pytest.mark.parametrize("point", ["before the swap", "after the swap"])
def test_kill_9_during_the_final_save_leaves_the_old_or_the_new_model(tmp_path, point):
    target = tmp_path / "model"
    _old_run(target)
    old = _top_files(target)
    reference = tmp_path / "reference"
    _save(reference, seed=2, name="new")
    new = _top_files(reference)
    new.pop("README.md"), old.pop("README.md")  # the card names its folder
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(target), point], env=dict(_env(), TESTS_DIR=os.path.dirname(__file__)),
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    found = _top_files(target)
    assert "README.md" in found
    found.pop("README.md")
    assert found == (new if point == "after the swap" else old)
    m2dino.M2DinoForMultiTask.from_pretrained(target)  # complete either way
    assert (target / "checkpoint-2" / "optimizer.pt").exists()
    # The next save clears what the killed one left beside the folder.
    assert len(os.listdir(tmp_path)) == 3
    _save(target, seed=3, name="next")
    assert sorted(os.listdir(tmp_path)) == ["model", "reference"]


def test_saved_files_get_the_permissions_of_the_folder(tmp_path):
    previous_umask = os.umask(0o022)
    try:
        target = tmp_path / "shared"
        target.mkdir(mode=0o770)
        os.chmod(target, 0o2770)
        (target / "notes.txt").write_text("a lab's group-writable folder")
        os.chmod(target / "notes.txt", 0o660)
        _save(target, seed=1, name="first")
        modes = {name: stat.S_IMODE(os.stat(target / name).st_mode) for name in os.listdir(target) if name != LOCK_NAME}
        # the weights too (transformers writes them through a 0600 temporary file)
        assert modes["model.safetensors"] == 0o660 and set(modes.values()) == {0o660}, modes
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o2770
    finally:
        os.umask(previous_umask)


# ------------------------------------------------------------------------------------------------------
# m2dino-train: --overwrite, resume, --on_error


def _checkpoint_run(out, tasks, steps=2, extra=()):
    return train.main(["--data", "synthetic", "--tasks", *tasks, "--max_steps", str(steps), "--save_strategy", "steps",
                       "--save_steps", "1", "--output_dir", str(out), *FAST, *extra])


def test_overwrite_removes_the_old_checkpoints_only_once_the_new_model_is_in(tmp_path, monkeypatch):
    out = tmp_path / "model"
    _checkpoint_run(out, ["breast_3cls"])
    old_model, old_checkpoint = _top_files(out), _tree(out / "checkpoint-2")
    # Without --overwrite: refused. With it, a run that fails in its final save leaves the old model whole and
    # the old run's checkpoints on disk.
    with pytest.raises(SystemExit, match="already holds a model; pass --overwrite"):
        _checkpoint_run(out, ["lung"], steps=1)

    def broken_card(folder):
        raise OSError("disk full")

    monkeypatch.setattr("m2dino_training.cards.write_model_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        _checkpoint_run(out, ["lung"], steps=1, extra=["--overwrite"])
    assert _top_files(out) == old_model
    assert _tree(out / output_folder.PREVIOUS_CHECKPOINTS / "checkpoint-2") == old_checkpoint
    monkeypatch.undo()
    _checkpoint_run(out, ["lung"], steps=1, extra=["--overwrite"])
    assert m2dino.M2DinoForMultiTask.from_pretrained(out).served_tasks == ["lung"]
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-") or n.startswith(".previous")) == ["checkpoint-1"]
    assert json.loads((out / "checkpoint-1" / "config.json").read_text())["tasks"][0]["id"] == "lung"
    # checkpoints' weights get the folder's file mode too (transformers writes them 0600)
    modes = {stat.S_IMODE(os.stat(path).st_mode) for path in (out / "checkpoint-1").iterdir()}
    assert modes == {stat.S_IMODE(os.stat(out / "config.json").st_mode)}, modes


def test_resume_with_other_tasks_is_refused_before_any_weight_is_loaded(tmp_path, monkeypatch):
    out = tmp_path / "model"
    _checkpoint_run(out, ["breast_3cls", "IUGC"])
    checkpoint = out / "checkpoint-1"
    loads = []
    monkeypatch.setattr(MultiTaskTrainer, "_load_from_checkpoint", lambda self, *a, **k: loads.append(a))
    for tasks, fragment in ((["breast_3cls", "lung"], r"tasks only in the checkpoint: \['IUGC'\]; tasks only in this run: \['lung'\]"),
                            (["breast_3cls"], r"tasks only in the checkpoint: \['IUGC'\]")):
        with pytest.raises(SystemExit, match=rf"cannot resume from {checkpoint}: it was trained for tasks \['IUGC', 'breast_3cls'\].*{fragment}"):
            train.main(["--data", "synthetic", "--tasks", *tasks, "--max_steps", "3", "--output_dir", str(out),
                        "--resume_from_checkpoint", str(checkpoint), *FAST])
    # The same tasks in another order, or a task with another label count: refused too.
    saved = json.loads((checkpoint / "config.json").read_text())["tasks"]
    with pytest.raises(ValueError, match="the same tasks in another order"):
        check_resume_tasks(str(checkpoint), saved[::-1])
    with pytest.raises(ValueError, match=r"another type or label count: \['breast_3cls'\]"):
        check_resume_tasks(str(checkpoint), [saved[0], dict(saved[1], num_classes=5)])
    # The Trainer's own path (resume_from_checkpoint=True picks the last checkpoint) checks first as well.
    model = m2dino.M2DinoForMultiTask(tiny_config())
    trainer = MultiTaskTrainer(model=model, args=M2DinoTrainingArguments(output_dir=str(out), use_cpu=True, report_to="none"))
    with pytest.raises(ValueError, match=rf"cannot resume from {out / 'checkpoint-2'}: .*tasks only in this run: \['cervix_multi'"):
        trainer.train(resume_from_checkpoint=True)
    assert loads == []


def test_resume_reads_optimizer_and_rng_state_with_weights_only(tmp_path, monkeypatch):
    out = tmp_path / "model"
    _checkpoint_run(out, ["breast_3cls"])
    calls = []
    original = torch.load

    def recording_load(*args, **kwargs):
        calls.append((os.path.basename(str(args[0])), kwargs.get("weights_only")))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    train.main(["--data", "synthetic", "--tasks", "breast_3cls", "--max_steps", "3", "--output_dir", str(out),
                "--resume_from_checkpoint", str(out / "checkpoint-2"), *FAST])
    names = {name for name, _ in calls}
    assert {"optimizer.pt", "scheduler.pt"} <= names and any(name.startswith("rng_state") for name in names), calls
    assert all(weights_only is True for _, weights_only in calls), calls


@pytest.fixture(scope="module")
def challenge_layout(tmp_path_factory):
    from m2dino_training.data.synthetic import SyntheticUltrasoundSuite

    out = tmp_path_factory.mktemp("layout") / "fmc_uia"
    SyntheticUltrasoundSuite(scale=0.02, image_size=32, seed=3, tasks=["breast_3cls", "lung_2cls"]).write_challenge_layout(out)
    return out


def test_on_error_on_m2dino_train_and_rows_of_other_tasks_unchecked(challenge_layout, tmp_path):
    import csv
    import shutil

    data = tmp_path / "data"
    shutil.copytree(challenge_layout, data)
    csv_file = sorted((data / "train" / "csv_files").glob("*.csv"))[0]
    with open(csv_file, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    line, row = next((n, r) for n, r in enumerate(rows, start=2) if r["task_id"] == "breast_3cls")
    image = os.path.normpath(os.path.join(csv_file.parent, row["image_path"]))
    with open(image, "r+b") as handle:
        handle.truncate(os.path.getsize(image) // 2)
    common = ["--data", str(data), "--max_steps", "1", *FAST]
    from m2dino_training.data.fmc_uia import FMCUIADataError

    with pytest.raises(FMCUIADataError, match=rf"{csv_file}, line {line}, field 'image_path': cannot decode image"):
        train.main([*common, "--output_dir", str(tmp_path / "a")])
    # The bad row's task not selected: not even checked.
    assert set(train.main([*common, "--tasks", "lung_2cls", "--output_dir", str(tmp_path / "b")])) == {"all"}
    results = train.main([*common, "--on_error", "skip", "--output_dir", str(tmp_path / "c")])["all"]
    assert results["data"]["loading"]["num_skipped"] == 1
    assert results["data"]["loading"]["skipped"]["train"] == {"breast_3cls": 1}
    with pytest.raises(SystemExit, match="unknown on_error 'ignore'; valid: raise, skip"):
        train.main([*common, "--on_error", "ignore", "--output_dir", str(tmp_path / "d")])


def test_final_save_without_an_atomic_swap_falls_back_to_two_renames(tmp_path, monkeypatch, caplog):
    target = tmp_path / "model"
    _old_run(target)

    def unsupported(first, second):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(output_folder, "_exchange", unsupported)
    with caplog.at_level("WARNING"):
        _save(target, seed=2, name="new")
    assert f"cannot swap {target} in one step" in caplog.text
    assert json.loads((target / "eval_results.json").read_text())["run"] == "new"
    assert (target / "checkpoint-2" / "optimizer.pt").exists() and sorted(os.listdir(tmp_path)) == ["model"]
