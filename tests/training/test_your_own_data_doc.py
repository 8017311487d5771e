"""docs/your_own_data.md runs as written (its Python blocks, executed in order in one namespace), and so does the
README's pipeline snippet, without stopping at a prompt."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import tiny_config

import modeling_m2dino as m2dino

DOC = Path(__file__).resolve().parents[2] / "docs" / "your_own_data.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_every_snippet_of_the_user_guide_runs_in_order(tmp_path, monkeypatch):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 7  # one per section: a block the pattern missed would go untested
    monkeypatch.chdir(tmp_path)  # the guide writes my_data/, my_run/, my_model/ and my_adapter/ where it runs
    namespace = {"__name__": "your_own_data"}
    for number, block in enumerate(blocks, start=1):
        try:
            exec(compile(block, f"{DOC.name} block {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{DOC.name}: Python block {number} failed: {error!r}") from error
    # What the guide says each step gives.
    assert namespace["config"].task_ids == ["nodule_mask", "nodule_malignancy", "isthmus_ends"]
    metrics = namespace["metrics"]
    assert {"eval_nodule_mask_DSC", "eval_nodule_malignancy_F1_macro", "eval_isthmus_ends_MRE", "eval_score"} <= set(metrics)
    assert sorted(p["label"] for p in namespace["classify"](namespace["image"])) == ["benign", "malignant"]
    assert [level.shape[-1] for level in namespace["feature_maps"]] == [16, 8, 4, 2]  # 64 px at strides 4..32
    assert tuple(namespace["logits"].shape) == (1, 2, 64, 64)
    assert os.path.isfile(tmp_path / "my_adapter" / "adapter_config.json")


README = DOC.parents[1] / "README.md"

# Runs a README block in a fresh Python whose stdin is closed: a prompt for "run custom code? [y/N]" fails it.
README_RUNNER = """
import sys
import numpy as np
from PIL import Image
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56), dtype=np.uint8))
exec(open(sys.argv[1]).read())
print(classify(image))
"""


def test_readme_pipeline_snippet_runs_without_a_prompt(tmp_path):
    snippet = next(b for b in python_blocks(README.read_text(encoding="utf-8")) if "pipeline(" in b)
    tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in ("breast_2cls", "lung")]
    m2dino.M2DinoForMultiTask(tiny_config(tasks=tasks, default_task="breast_2cls")).save_pretrained(tmp_path / "m2dino")
    m2dino.M2DinoImageProcessor(size=32).save_pretrained(tmp_path / "m2dino")
    (tmp_path / "snippet.py").write_text(snippet)
    run = subprocess.run([sys.executable, "-c", README_RUNNER, "snippet.py"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "'label': 'malignant'" in run.stdout and "'label': 'benign'" in run.stdout
