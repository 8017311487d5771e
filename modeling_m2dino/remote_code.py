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


def write_remote_code(save_directory: str, config):
    """Sets the full `config.auto_map` (call it before the config is written) and copies the package's modules
    (all but `__init__.py`, whose registrations the auto_map replaces) into `save_directory`."""
    config.auto_map = dict(AUTO_MAP)
    os.makedirs(save_directory, exist_ok=True)
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(package_dir)):
        if name.endswith(".py") and name != "__init__.py":
            shutil.copyfile(os.path.join(package_dir, name), os.path.join(save_directory, name))


__all__ = ["AUTO_MAP", "write_remote_code"]
