"""The model code saved beside the weights, so that `trust_remote_code=True` loads a folder where this package is
not installed: every entry point in `config.auto_map`, and this package's modules copied flat into the folder."""

import os
import shutil

# Every saved folder names all of its entry points, whichever class saved it (transformers writes only its own).
AUTO_MAP = {
    "AutoConfig": "configuration_m2dino.M2DinoConfig",
    "AutoModel": "modeling_m2dino.M2DinoModel",
    "AutoModelForSemanticSegmentation": "modeling_m2dino.M2DinoForSemanticSegmentation",
    "AutoModelForImageClassification": "modeling_m2dino.M2DinoForImageClassification",
    "AutoModelForObjectDetection": "modeling_m2dino.M2DinoForObjectDetection",
    "AutoModelForKeypointDetection": "modeling_m2dino.M2DinoForKeypointDetection",
    "AutoBackbone": "backbone_m2dino.M2DinoBackbone",
}
# The module of the type registry, whose saved copy imports every type module by name (see `type_module_imports`).
REGISTRY_MODULE = "task_types.py"


def registered_type_modules(package_dir: str) -> list[str]:
    """The names of the modules in `package_dir` (this package, or a folder's copy of it) that hold a registered task
    type: a module `x.py` whose import registers a type named `x` (the registry loads it when asked for `x`)."""
    from .task_type_base import TASK_TYPES

    stems = sorted(name[:-3] for name in os.listdir(package_dir) if name.endswith(".py") and name != "__init__.py")
    return [stem for stem in stems if stem in TASK_TYPES]


def type_module_imports(package_dir: str) -> str:
    """An import line per registered type module. transformers copies into its module cache only the files that the
    entry points import with `from .x import` lines, so a type module that no listed task imports (a type used by no
    task of the registry, then given to a task of a saved model) would be missing from a folder loaded remotely."""
    from .task_type_base import TASK_TYPES

    lines = [f"from .{name} import {TASK_TYPES[name].__name__}  # noqa: F401" for name in registered_type_modules(package_dir)]
    return "\n# Every registered task type (written on saving), so that this folder loads whatever its tasks.\n" + "\n".join(lines) + "\n"


def write_remote_code(save_directory: str, config):
    """Sets the full `config.auto_map` (call it before the config is written) and copies the package's modules
    (all but `__init__.py`, whose registrations the auto_map replaces) into `save_directory`; the copy of the type
    registry imports every registered type module."""
    config.auto_map = dict(AUTO_MAP)
    os.makedirs(save_directory, exist_ok=True)
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(package_dir)):
        if name.endswith(".py") and name != "__init__.py":
            shutil.copyfile(os.path.join(package_dir, name), os.path.join(save_directory, name))
    with open(os.path.join(save_directory, REGISTRY_MODULE), "a", encoding="utf-8") as f:
        f.write(type_module_imports(package_dir))


__all__ = ["AUTO_MAP", "registered_type_modules", "type_module_imports", "write_remote_code"]
