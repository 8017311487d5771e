"""FSDP with 2 CPU processes (gloo).

torch's FSDP2 (`fully_shard`) runs on the CPU: the model shards per encoder layer, trains on mixed-task batches and
its gathered full state dict saves into a folder that `from_pretrained` loads. accelerate (and so the Trainer and
`m2dino-train`) does not apply FSDP to CPU processes: its default FSDP flags stop with the error recorded below
(docs/fsdp.md).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import modeling_m2dino as m2dino

FSDP_SCRIPT = """
import json, sys
import torch, torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
sys.path.insert(0, sys.argv[2])
from conftest import four_task_batch, tiny_config
import modeling_m2dino as m2dino

out_dir = sys.argv[1]
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = m2dino.M2DinoForMultiTask(tiny_config())
for layer in model.m2dino.model.layer:  # one FSDP unit per encoder layer (its experts inside), then the rest
    fully_shard(layer)
fully_shard(model)
first = model.m2dino.model.layer[0].mlp.up_proj.weight
sharded = isinstance(first, DTensor) and first.to_local().numel() < first.numel()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
pixel_values, tasks, labels = four_task_batch(seed=rank)  # each process its own mixed-task batch
losses = []
for step in range(3):
    loss = model(pixel_values, tasks=tasks, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    losses.append(loss.item())
state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
if rank == 0:
    plain = m2dino.M2DinoForMultiTask(tiny_config())
    plain.load_state_dict(state)
    plain.save_pretrained(out_dir)
    torch.save(state, out_dir + "/gathered.pt")
    json.dump({"sharded": sharded, "losses": losses, "world_size": dist.get_world_size()}, open(out_dir + "/run.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_fsdp2_on_two_cpu_processes_trains_and_its_saved_model_loads(tmp_path):
    script = tmp_path / "fsdp.py"
    script.write_text(FSDP_SCRIPT)
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541", str(script),
         str(tmp_path / "out"), tests_dir],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert run.returncode == 0, run.stderr[-5000:]
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["sharded"] and report["world_size"] == 2
    assert len(report["losses"]) == 3 and all(torch.isfinite(torch.tensor(report["losses"])))
    assert report["losses"][-1] < report["losses"][0]

    model, info = m2dino.M2DinoForMultiTask.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    gathered = torch.load(tmp_path / "out" / "gathered.pt")
    state = model.state_dict()
    assert set(state) == set(gathered)
    for name, value in gathered.items():
        assert torch.equal(state[name], value), name
    # Trained: the weights moved away from the seed's initialisation.
    torch.manual_seed(0)
    initial = m2dino.M2DinoForMultiTask(m2dino.M2DinoConfig(**model.config.to_dict())).state_dict()
    assert not torch.equal(initial["m2dino.model.layer.0.attention.q_proj.weight"], state["m2dino.model.layer.0.attention.q_proj.weight"])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_accelerate_fsdp_on_cpu_processes_stops_with_a_device_error(tmp_path):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29543",
              "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_transformer_layer_cls_to_wrap", "M2DinoLayer",
              "-m", "m2dino_training.train", "--use_cpu", "true", "--data", "synthetic", "--preset", "tiny",
              "--image_size", "32", "--synthetic_scale", "0.02", "--max_steps", "1", "--tasks", "breast_3cls",
              "--output_dir", str(tmp_path / "out")]
    run = subprocess.run(launch, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode != 0
    assert ("There are currently no available devices found, must be one of 'XPU', 'CUDA', 'MLU', 'NPU', 'MUSA', "
            "or 'HPU'.") in run.stderr
