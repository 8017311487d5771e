"""Exact resume after SIGKILL, and a 2-process CPU (gloo) run that matches a single-process one."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

FAST = ["--preset", "tiny", "--image_size", "32", "--synthetic_scale", "0.02", "--per_device_train_batch_size", "8",
        "--dataloader_num_workers", "0", "--eval_examples_per_task", "4", "--logging_steps", "1", "--disable_tqdm", "true",
        "--tasks", "cervix_multi", "breast_3cls", "thyroid_nodule_det", "IUGC", "--sampler", "mixed"]

RUN_SCRIPT = """
import os, signal, sys
from transformers import TrainerCallback
from m2dino_training import train

class KillAt(TrainerCallback):
    def __init__(self, step):
        self.step = step
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: as a crashed node

kill_at = int(os.environ.get("KILL_AT_STEP", "0"))
train.main(sys.argv[1:], callbacks=[KillAt(kill_at)] if kill_at else None)
"""


def run(args, kill_at=None):
    env = dict(os.environ, KILL_AT_STEP=str(kill_at or 0))
    return subprocess.run([sys.executable, "-c", RUN_SCRIPT, *args], env=env, capture_output=True, text=True)


def test_killed_run_resumes_to_bit_identical_weights(tmp_path):
    common = ["--data", "synthetic", "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3",
              "--full_determinism", "true", "--seed", "7", *FAST]
    reference = run([*common, "--output_dir", str(tmp_path / "reference")])
    assert reference.returncode == 0, reference.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    killed = run([*common, "--output_dir", str(interrupted)], kill_at=5)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (interrupted / "checkpoint-3").is_dir() and not (interrupted / "model.safetensors").exists()
    resumed = run([*common, "--output_dir", str(interrupted), "--resume_from_checkpoint", str(interrupted / "checkpoint-3")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected = load_file(tmp_path / "reference" / "model.safetensors")
    actual = load_file(interrupted / "model.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def logged_losses(folder):
    return [entry["loss"] for entry in json.loads((folder / "train_log.json").read_text()) if "loss" in entry]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_two_process_gloo_run_matches_single_process_with_the_same_global_batch(tmp_path):
    # With one task per global batch, and classification and regression losses that are means over samples,
    # averaging the two half-batch losses (DDP) equals the full-batch loss; the tolerance covers float
    # summation order over three steps. (Mixed batches sum per-task means, which halves do not average to.)
    common = ["--data", "synthetic", "--max_steps", "3", "--seed", "3", "--use_cpu", "true", "--preset", "tiny",
              "--image_size", "32", "--synthetic_scale", "0.02", "--dataloader_num_workers", "0", "--logging_steps", "1",
              "--eval_examples_per_task", "4", "--disable_tqdm", "true", "--tasks", "breast_3cls", "lung_2cls", "IUGC",
              "--learning_rate", "1e-3", "--sampler", "homogeneous"]
    single = subprocess.run([sys.executable, "-m", "m2dino_training.train", *common, "--per_device_train_batch_size", "8",
                             "--output_dir", str(tmp_path / "single")], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    # accelerate's `--cpu` flag runs one process; `--multi_gpu` starts the processes (torchrun underneath), and
    # `--use_cpu true` makes them train on the CPU with gloo.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517", "-m", "m2dino_training.train"]
    distributed = subprocess.run([*launch, *common, "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "ddp")],
                                 capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    single_losses, ddp_losses = logged_losses(tmp_path / "single"), logged_losses(tmp_path / "ddp")
    assert len(single_losses) == len(ddp_losses) == 3
    state = json.loads((tmp_path / "ddp" / "eval_results.json").read_text())
    assert state["world_size"] == 2
    for a, b in zip(single_losses, ddp_losses):
        assert b == pytest.approx(a, rel=1e-3, abs=1e-4)
