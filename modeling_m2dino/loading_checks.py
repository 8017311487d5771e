"""What M2DINO checks around saving and loading, beyond transformers' own loading policy.

- Safetensors only: a folder whose weights exist only as pickles is refused, naming the file and the conversion.
- The task list travels with the weights: router rows are stored by position and heads by task id, so a
  reordered, renamed or re-typed task list in `config.json` would give every image another task's experts or head
  without any shape changing. Saving records the tasks in the safetensors metadata; loading compares them.
"""

import json
import logging
import os
import shutil
import struct
from contextlib import contextmanager

from safetensors import safe_open
from transformers.utils import logging as hf_logging

logger = hf_logging.get_logger(__name__)

# Safetensors metadata entry: JSON list of [task id, task type], one per router row, in row order.
TASKS_METADATA_KEY = "m2dino_tasks"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def add_safetensors_metadata(path: str, entries: dict[str, str]):
    """Adds string `entries` to the metadata of the safetensors file at `path` (rewritten atomically).

    Only the JSON header changes; the tensor bytes are copied as they are (their offsets are relative to the
    end of the header).
    """
    with open(path, "rb") as source:
        header_size = struct.unpack("<Q", source.read(8))[0]
        header = json.loads(source.read(header_size))
        header["__metadata__"] = {**header.get("__metadata__", {}), **entries}
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)  # safetensors keeps the data start 8-byte aligned
        staging = f"{path}.tmp-{os.getpid()}"
        with open(staging, "wb") as target:
            target.write(struct.pack("<Q", len(encoded)))
            target.write(encoded)
            shutil.copyfileobj(source, target, 16 * 1024 * 1024)
    shutil.copymode(path, staging)
    os.replace(staging, path)


def record_saved_tasks(folder: str, task_specs):
    """Records the (task id, task type) of every router row in the metadata of each safetensors file of `folder`."""
    tasks = json.dumps([[task.id, task.type] for task in task_specs])
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            add_safetensors_metadata(os.path.join(folder, name), {TASKS_METADATA_KEY: tasks})


def refuse_pickle_only_folder(folder: str):
    """Raises when `folder` holds pickled weights but no safetensors file, naming the file and the conversion."""
    if not os.path.isdir(folder):
        return
    names = sorted(os.listdir(folder))
    if any(name.endswith(".safetensors") or name.endswith(".safetensors.index.json") for name in names):
        return
    pickles = [name for name in names if name.endswith(_PICKLE_SUFFIXES)]
    if pickles:
        path = os.path.join(folder, pickles[0])
        raise OSError(
            f"{path} is a pickle, and M2DINO loads safetensors only (a pickle can run arbitrary code). Convert it "
            f"where you trust it: `from safetensors.torch import save_file; import torch; "
            f"save_file(torch.load({path!r}, weights_only=True), {os.path.join(folder, 'model.safetensors')!r})`, "
            "then remove the pickle."
        )


def saved_tasks(folder: str) -> list[tuple[str, str]] | None:
    """The (task id, task type) per router row recorded in the safetensors metadata of `folder`, or None
    when the weights predate that record."""
    names = sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))
    for name in names:
        with safe_open(os.path.join(folder, name), framework="pt") as weights:
            recorded = (weights.metadata() or {}).get(TASKS_METADATA_KEY)
        if recorded is not None:
            return [tuple(entry) for entry in json.loads(recorded)]
    return None


def check_saved_tasks(folder: str, config):
    """Refuses a config whose tasks disagree with those the weights in `folder` were saved for (see the module
    docstring); a task appended at the end is no disagreement."""
    recorded = saved_tasks(folder)
    if recorded is None:
        logger.warning(f"{folder}: the weights record no task list (saved by an older M2DINO); task order unchecked")
        return
    current = [(task.id, task.type) for task in config.task_specs]
    recorded_types = dict(recorded)
    retyped = [f"{task_id!r} ({recorded_types[task_id]} in the weights, {kind} in the config)"
               for task_id, kind in current if task_id in recorded_types and recorded_types[task_id] != kind]
    if retyped:
        raise ValueError(f"{folder}: config.json changes the type of task(s) {', '.join(retyped)}")
    if len(recorded) == len(current) and recorded != current:
        rows = [f"row {row}: {old!r} in the weights, {new!r} in the config"
                for row, ((old, _), (new, _)) in enumerate(zip(recorded, current)) if old != new]
        raise ValueError(
            f"{folder}: the task list of config.json does not match the router rows of the weights ({'; '.join(rows)}). "
            f"The weights were saved for tasks {[task_id for task_id, _ in recorded]} in that order; restore that "
            "order in config.json (or pass `tasks=` in that order)."
        )


@contextmanager
def load_report_replaced(model_class_name: str):
    """Leaves out transformers' load report for `model_class_name` while the block runs, for a caller that reports
    what it loaded itself. A filter on transformers' loading logger, removed afterwards: no log level changes, and
    every other message still goes out."""
    loading_logger = logging.getLogger("transformers.modeling_utils")
    marker = f"{model_class_name} LOAD REPORT"

    def not_this_report(record: logging.LogRecord) -> bool:
        return marker not in record.getMessage()

    loading_logger.addFilter(not_this_report)
    try:
        yield
    finally:
        loading_logger.removeFilter(not_this_report)


__all__ = [
    "TASKS_METADATA_KEY",
    "add_safetensors_metadata",
    "check_saved_tasks",
    "load_report_replaced",
    "record_saved_tasks",
    "refuse_pickle_only_folder",
    "saved_tasks",
]
