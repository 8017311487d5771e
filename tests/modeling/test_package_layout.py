"""The model package's modules depend on each other in one direction only (no import cycle), and its one-job
modules stay free of the model classes they serve."""

import ast
import os

import modeling_m2dino

PACKAGE_DIR = os.path.dirname(modeling_m2dino.__file__)


def package_imports() -> dict[str, set[str]]:
    """module name -> the package modules it imports (relative imports, at any depth of the file)."""
    graph = {}
    for name in sorted(os.listdir(PACKAGE_DIR)):
        if not name.endswith(".py") or name == "__init__.py":
            continue
        with open(os.path.join(PACKAGE_DIR, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        graph[name[:-3]] = {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
    return graph


def test_modules_import_each_other_without_a_cycle():
    graph = package_imports()
    assert "upcycling" in graph["modeling_m2dino"] and "modeling_m2dino" in graph["convert_dinov3"]
    visiting, done = [], set()

    def visit(module):
        assert module not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(module):] + [module])}"
        if module in done:
            return
        visiting.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_one_job_modules_do_not_import_the_model_classes():
    graph = package_imports()
    for module in ("upcycling", "loading_checks", "remote_code", "all_tasks", "per_sample"):
        assert "modeling_m2dino" not in graph[module], module
