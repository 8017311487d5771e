"""The loader of transformers' common tests: cached after the first download, and loud when it cannot fetch."""

import subprocess

import pytest
import transformers

import common_tests


def test_cached_tests_are_reused_without_running_pip(monkeypatch):
    folder = common_tests.fetch_transformers_tests()  # downloads once if this machine has no cache yet
    assert folder == common_tests.transformers_tests_cache_dir()
    assert folder.name == transformers.__version__

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the cache exists")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert common_tests.fetch_transformers_tests() == folder
    module = common_tests.load_transformers_test_module("test_configuration_common")
    assert module.__file__.startswith(str(folder))


def test_failed_download_names_the_command_and_leaves_no_partial_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("M2DINO_TRANSFORMERS_TESTS_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run",
                        lambda command, **kwargs: subprocess.CompletedProcess(command, 1, "", "no network"))
    with pytest.raises(RuntimeError, match=r"(?s)pip download --no-deps --no-binary :all: .*transformers==9\.9\.9.*no network"):
        common_tests.fetch_transformers_tests("9.9.9")
    assert list(tmp_path.iterdir()) == []
