"""The packages export their public API where users look for it, without importing everything at once."""

import importlib
import subprocess
import sys

import pytest

import m2dino_training
import m2dino_training.data


def test_the_documented_data_imports():
    from m2dino_training.data import SyntheticUltrasoundSuite, load_data, load_fmc_uia
    from m2dino_training.data.fmc_uia import load_fmc_uia as reader
    from m2dino_training.data.hf_folder import load_data as loader
    from m2dino_training.data.synthetic import SyntheticUltrasoundSuite as suite

    assert (load_fmc_uia, load_data, SyntheticUltrasoundSuite) == (reader, loader, suite)


@pytest.mark.parametrize("package", [m2dino_training, m2dino_training.data], ids=lambda p: p.__name__)
def test_every_exported_name_is_its_module_object(package):
    assert package.__all__ and len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        module = importlib.import_module(package._EXPORTS[name], package.__name__)
        assert getattr(package, name) is getattr(module, name), name
        assert name in dir(package)
    namespace = {}
    exec(f"from {package.__name__} import *", namespace)
    assert set(package.__all__) <= set(namespace)


def test_unknown_names_and_submodules():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        m2dino_training.no_such_name
    # the command modules keep their names: a function must not shadow them
    from m2dino_training import evaluate, predict, score, train

    assert [m.__name__ for m in (evaluate, predict, score, train)] == [
        f"m2dino_training.{name}" for name in ("evaluate", "predict", "score", "train")
    ]


def test_importing_one_submodule_does_not_import_the_rest():
    code = (
        "import sys, m2dino_training, m2dino_training.data.samplers; "
        "print(sorted(m for m in ('datasets', 'scipy', 'm2dino_training.trainer', 'm2dino_training.data.synthetic') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_finetune_command_does_not_import_the_train_command():
    code = "import sys, m2dino_training.finetune; print('m2dino_training.train' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
