"""transformers' own common test mixins, taken from the source distribution of the installed release.

The `tests/` folder of a transformers source distribution holds the mixins every in-library model passes
(`ModelTesterMixin`, `ConfigTester`, `ImageProcessingTestMixin`, ...). They are not part of the wheel, so
the first call downloads the sdist of exactly the installed version with pip, extracts its `tests/` folder
into a cache, and reuses it afterwards: no copy of transformers' code lives in this repository.

    from common_tests import load_transformers_test_module

    ModelTesterMixin = load_transformers_test_module("test_modeling_common").ModelTesterMixin
    ConfigTester = load_transformers_test_module("test_configuration_common").ConfigTester

The cache is `$M2DINO_TRANSFORMERS_TESTS_CACHE/<version>` if that variable is set, otherwise
`~/.cache/m2dino/transformers-tests/<version>`. The extracted folder is importable as the package
`transformers_tests`; the few modules the sdist does not ship (per-model folders, generation and export
mixins, CI helpers) are replaced by small stubs written next to it.
"""

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import transformers

PACKAGE_NAME = "transformers_tests"

# Modules imported by the common test files that the sdist does not contain. Each stub provides only what
# the mixins import; the generation and export mixins do not apply to an encoder-only vision model.
_STUBS = {
    f"{PACKAGE_NAME}/__init__.py": "",
    f"{PACKAGE_NAME}/generation/__init__.py": "",
    f"{PACKAGE_NAME}/generation/test_utils.py": (
        '"""Stub: M2DINO does not generate, so no generation mixin is mixed in."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    f"{PACKAGE_NAME}/exporters/__init__.py": "",
    f"{PACKAGE_NAME}/exporters/test_export.py": (
        '"""Stub: the export mixin of transformers\' repository; M2DINO\'s own export tests live in its suite."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    f"{PACKAGE_NAME}/utils/__init__.py": "",
    f"{PACKAGE_NAME}/utils/test_configuration_utils.py": (
        '"""Stub: common `PreTrainedConfig` arguments, each set to a value other than its default."""\n\n'
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["M2DinoModel"],\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
    # test_image_processing_common.py appends `<sdist>/utils` to sys.path for this CI helper, which maps
    # hub URLs of test images to local files. Here every URL maps to a deterministic image drawn locally,
    # so nothing reads the network.
    "utils/fetch_hub_objects_for_ci.py": (
        '"""Stub: test images drawn locally instead of fetched from the hub."""\n\n'
        "import hashlib\n"
        "import os\n\n"
        "import numpy as np\n"
        "from PIL import Image\n\n"
        "_IMAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'images')\n\n\n"
        "def url_to_local_path(url, return_url_if_not_found=True):\n"
        "    name = os.path.basename(url)\n"
        "    path = os.path.join(_IMAGE_DIR, name if name.endswith('.png') else name.rsplit('.', 1)[0] + '.png')\n"
        "    if not os.path.exists(path):\n"
        "        os.makedirs(_IMAGE_DIR, exist_ok=True)\n"
        "        seed = int(hashlib.sha256(url.encode()).hexdigest()[:8], 16)\n"
        "        rng = np.random.default_rng(seed)\n"
        "        if 'annotation' in url or name.endswith('.png'):\n"
        "            array = rng.integers(0, 150, size=(64, 80), dtype=np.uint8)\n"
        "        else:\n"
        "            array = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)\n"
        "        Image.fromarray(array).save(path)\n"
        "    return path\n"
    ),
}


def transformers_tests_cache_dir(version=None):
    """The folder holding the extracted `tests/` of transformers `version` (default: the installed one)."""
    version = version or transformers.__version__
    root = os.environ.get("M2DINO_TRANSFORMERS_TESTS_CACHE")
    root = Path(root) if root else Path.home() / ".cache" / "m2dino" / "transformers-tests"
    return root / version


def fetch_transformers_tests(version=None):
    """Download (once) the sdist of transformers `version`, extract its tests, write the stubs.

    Returns the folder to put on `sys.path` (it contains the package `transformers_tests`). Raises
    `RuntimeError` naming the pip command when the download fails.
    """
    version = version or transformers.__version__
    target = transformers_tests_cache_dir(version)
    if (target / PACKAGE_NAME / "test_modeling_common.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Extract into a private folder and rename it into place, so that concurrent test sessions never see
    # a half-written cache.
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
    try:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "--quiet", f"transformers=={version}", "-d", str(staging)]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = sorted(staging.glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(
                f"Could not download the source distribution of transformers {version} for its common tests "
                f"(`{' '.join(command)}` exited {result.returncode}):\n{result.stderr.strip()}"
            )
        with tarfile.open(archives[0]) as archive:
            prefix = archive.getnames()[0].split("/")[0] + "/tests/"
            members = [m for m in archive.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
            for member in members:
                member.name = PACKAGE_NAME + "/" + member.name[len(prefix):]
            archive.extractall(staging, members=members, filter="data")
        archives[0].unlink()
        for relative_path, source in _STUBS.items():
            path = staging / relative_path
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(source)
        try:
            staging.rename(target)
        except OSError:
            if not (target / PACKAGE_NAME / "test_modeling_common.py").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_transformers_test_module(name, version=None):
    """Import `name` (e.g. "test_modeling_common") from the tests of the installed transformers release.

    Fetches and caches them on first use (see `fetch_transformers_tests`).
    """
    folder = str(fetch_transformers_tests(version))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(f"{PACKAGE_NAME}.{name}")


# Marks the common test files use (transformers declares them in its own conftest, which the sdist lacks).
TRANSFORMERS_TEST_MARKS = {
    "accelerate_tests": "tests of accelerate's big-model features",
    "slow": "slow tests, run only with RUN_SLOW=1",
    "flash_attn_test": "tests that need Flash Attention 2",
    "flash_attn_3_test": "tests that need Flash Attention 3",
    "flash_attn_4_test": "tests that need Flash Attention 4",
    "torch_compile_test": "tests of torch.compile",
}


def register_transformers_test_marks(config):
    """Declares the marks above to pytest (call from `pytest_configure`)."""
    for name, description in TRANSFORMERS_TEST_MARKS.items():
        config.addinivalue_line("markers", f"{name}: {description} (transformers' common tests)")


@pytest.fixture(scope="session")
def transformers_test_module():
    """Session fixture: the loader above, for tests that prefer fixtures to module-level imports."""
    return load_transformers_test_module
