"""Package attributes that import their module on first use.

`import m2dino_training.data.dicom` should not pay for `datasets`, scipy or the Trainer; the package
namespaces therefore list their public names and import a submodule only when one of its names is asked for.
"""

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """(`__getattr__`, `__dir__`) for a package whose `exports` map public names to submodules (relative)."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # the next access is a plain attribute
        return value

    def __dir__():
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
