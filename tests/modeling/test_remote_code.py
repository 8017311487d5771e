"""The code saved beside the weights: a folder loads with trust_remote_code whatever task types its tasks use."""

import os
import shutil
import subprocess
import sys

import modeling_m2dino as m2dino
from modeling_m2dino.remote_code import registered_type_modules
from modeling_m2dino.task_types import TASK_TYPES

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A type module that no task of the registry names (so nothing imports it by name), as a user's new type would be.
UNUSED_TYPE = '''
from torch import nn

from .task_type_base import TaskType


class UnusedByAnyTaskHead(nn.Module):
    pass


class UnusedByAnyTaskType(TaskType):
    name = "unused_by_any_task"
    order = 99
    head_class = UnusedByAnyTaskHead
'''

SAVE = """
import sys
import modeling_m2dino
from conftest import tiny_config

package, folder = sys.argv[1], sys.argv[2]
assert modeling_m2dino.__file__.startswith(package), modeling_m2dino.__file__  # the copy with the extra type
modeling_m2dino.M2DinoForMultiTask(tiny_config()).save_pretrained(folder)
"""

LOAD_REMOTELY = """
import importlib, sys
sys.modules["modeling_m2dino"] = None  # this Python cannot import the package: only the folder's code
from transformers import AutoModel

model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
remote = importlib.import_module(type(model).__module__.rsplit(".", 1)[0] + ".task_types")
assert remote.__name__.startswith("transformers_modules"), remote.__name__
# the registry finds a type through its module file: the module must be in transformers' copy of the folder's code
print(sorted(name for name in ("unused_by_any_task", "measurement", "segmentation") if name in remote.TASK_TYPES))
"""


def test_every_registered_type_module_is_found():
    package_dir = os.path.dirname(os.path.abspath(m2dino.__file__))
    assert registered_type_modules(package_dir) == sorted(TASK_TYPES)


def test_a_saved_folder_loads_every_type_remotely_even_one_no_task_uses(tmp_path):
    package = tmp_path / "package"
    shutil.copytree(os.path.dirname(os.path.abspath(m2dino.__file__)), package / "modeling_m2dino",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "modeling_m2dino" / "unused_by_any_task.py").write_text(UNUSED_TYPE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), TESTS_DIR]), OMP_NUM_THREADS="1",
               HF_MODULES_CACHE=str(tmp_path / "modules"))
    for script, *args in ((SAVE, package, tmp_path / "saved"), (LOAD_REMOTELY, tmp_path / "saved")):
        run = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "['measurement', 'segmentation', 'unused_by_any_task']"
    saved_registry = (tmp_path / "saved" / "task_types.py").read_text()
    assert "from .unused_by_any_task import UnusedByAnyTaskType" in saved_registry
