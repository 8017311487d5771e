"""A task type is one unit of code: no module outside the type modules and the registries names a task type.

Every table and branch on task types goes through the registries (`modeling_m2dino.task_types.TASK_TYPES`,
`m2dino_training.task_types.TRAINING_TASK_TYPES`), so a string constant equal to a type name anywhere else is a
table or an if-chain that a new type would have to be added to.
"""

import ast
import os

import pytest

from m2dino_training.task_types import TRAINING_TASK_TYPES
from modeling_m2dino.task_types import TASK_TYPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED_FOLDERS = ("modeling_m2dino", "training", os.path.join("training", "data"))
# The registries: the type registry itself and the task registry, whose entries name their type.
REGISTRIES = {"modeling_m2dino/task_type_base.py", "modeling_m2dino/task_types.py", "modeling_m2dino/tasks.py"}
# A string that is a type name by coincidence: transformers' key of a semantic segmentation post-processing result.
COINCIDENCES = {("modeling_m2dino/image_processing_m2dino.py", "segmentation")}


def type_modules() -> set[str]:
    """The model side's module of each type, and the training side's package of type modules."""
    return {f"modeling_m2dino/{name}.py" for name in TASK_TYPES}


def docstring_nodes(tree: ast.AST) -> set[int]:
    nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                nodes.add(id(first.value))
    return nodes


def type_names_in(path: str) -> list[tuple[int, str]]:
    """(line, name) of every string constant equal to a task type name, docstrings left out."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    skipped = docstring_nodes(tree)
    names = set(TASK_TYPES)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in skipped]


def scanned_files() -> list[str]:
    files = []
    for folder in SCANNED_FOLDERS:
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".py"):
                files.append(f"{folder}/{name}".replace(os.sep, "/"))
    return files


def test_the_registries_know_the_same_types():
    assert list(TASK_TYPES) == list(TRAINING_TASK_TYPES)
    assert {"segmentation", "classification", "detection", "regression"} <= set(TASK_TYPES)
    for name, kind in TRAINING_TASK_TYPES.items():
        assert kind.model_type is TASK_TYPES[name]
        assert os.path.isfile(os.path.join(ROOT, "modeling_m2dino", f"{name}.py"))


def test_no_task_type_name_outside_the_type_modules_and_the_registries():
    allowed = type_modules() | REGISTRIES
    found = []
    for path in scanned_files():
        if path in allowed:
            continue
        found += [f"{path}:{line}: {name!r}" for line, name in type_names_in(path) if (path, name) not in COINCIDENCES]
    assert not found, "task types named outside their modules (route them through the registries):\n" + "\n".join(found)


def test_the_scan_finds_a_type_name(tmp_path, monkeypatch):
    """The scan itself sees a table keyed by type names and skips docstrings."""
    module = tmp_path / "example.py"
    module.write_text('"""Mentions segmentation in a docstring."""\nCOLOURS = {"segmentation": "tab:blue"}\n')
    monkeypatch.setitem(globals(), "ROOT", str(tmp_path))
    assert type_names_in("example.py") == [(2, "segmentation")]


def test_an_unknown_type_is_refused_with_the_known_ones():
    from modeling_m2dino.tasks import TaskSpec

    with pytest.raises(ValueError, match="unknown type 'volumetry'.*segmentation"):
        TaskSpec(id="x", type="volumetry", num_classes=2)
    with pytest.raises(KeyError, match="tasks"):  # a module of the package that is not a type
        TASK_TYPES["tasks"]
