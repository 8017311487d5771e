"""Task adapters of an M2DINO: saved under their task's name, loaded several at a time onto the base model they were
trained on, switched, and merged into a plain M2DINO folder.

    model = load_adapters("m2dino", "finetune/lora")      # every adapter in the folder, each named by its task
    set_adapter(model, "lung_2cls")
    model(pixel_values, tasks="lung_2cls")
    merge_adapter("m2dino", "finetune/lora/lung_2cls", "m2dino-lung")   # from_pretrained loads it without PEFT

An adapter folder is PEFT's (`adapter_config.json`, `adapter_model.safetensors`) plus `m2dino_adapter.json`: the
fingerprint of the base weights (an adapter is refused on any other base) and the tasks the adapter added to the
base (`new_task`), which are added again before it loads. This module needs no training code.
"""

import hashlib
import json
import os

import torch

from modeling_m2dino import M2DinoForMultiTask, M2DinoImageProcessor, TaskSpec

from .new_task import add_task

ADAPTER_METADATA = "m2dino_adapter.json"


def load_base(model_dir) -> M2DinoForMultiTask:
    """A saved M2DINO folder as `M2DinoForMultiTask`, recorded under its absolute path."""
    model_dir = os.fspath(model_dir)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"{model_dir!r} is not a saved M2DINO folder (no config.json)")
    return M2DinoForMultiTask.from_pretrained(os.path.abspath(model_dir))


def weights_fingerprint(model) -> str:
    """SHA-256 of every weight's name, dtype, shape and bytes: which base model an adapter belongs to."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_adapter(peft_model, adapter_root: str, task_id: str, method: str, base_dir: str, fingerprint: str,
                 added_tasks=()) -> str:
    """Saves adapter `task_id` into `<adapter_root>/<task_id>/` (PEFT's layout for a named adapter), with the base
    model's fingerprint and the tasks the adapter adds. Returns the adapter folder."""
    root_card = os.path.join(adapter_root, "README.md")
    had_root_card = os.path.exists(root_card)
    peft_model.save_pretrained(adapter_root, selected_adapters=[task_id])
    if not had_root_card and os.path.exists(root_card):  # PEFT's blank template; each adapter gets its own card
        os.remove(root_card)
    adapter_dir = os.path.join(adapter_root, task_id)
    restore_head_member_keys(peft_model, adapter_dir, task_id)
    metadata = {"task": task_id, "method": method, "base_model": os.path.abspath(base_dir),
                "base_fingerprint": fingerprint, "tasks": list(peft_model.config.task_ids),
                "added_tasks": [spec.to_dict() for spec in added_tasks]}
    with open(os.path.join(adapter_dir, ADAPTER_METADATA), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
    return adapter_dir


def restore_head_member_keys(peft_model, adapter_dir: str, adapter_name: str) -> list[str]:
    """Puts back the keys PEFT writes wrongly for a task adapter's own head, and returns the keys put back.

    PEFT removes the adapter name from every saved key that ends in `.<adapter name>.<member>` (where its own layers
    keep the adapter's weights). A task adapter is named after its task and copies the head `heads.<task>`, so a
    parameter or buffer the head module holds itself (a detection head's `queries`, a measurement head's
    `value_mean`) is written as `heads.<member>`, a key PEFT's own loading then looks for in vain (a KeyError).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = os.path.join(adapter_dir, "adapter_model.safetensors")
    if not os.path.isfile(path):
        return []
    suffix = f".{adapter_name}"
    renames = {}
    for name, module in peft_model.named_modules():
        copies = getattr(module, "modules_to_save", None)
        if not name.endswith(suffix) or not isinstance(copies, torch.nn.ModuleDict) or adapter_name not in copies:
            continue
        for member in copies[adapter_name].state_dict():
            if "." not in member:  # held by the head module itself, not by one of its layers
                renames[f"{name.removesuffix(suffix)}.{member}"] = f"{name}.{member}"
    with safe_open(path, "pt") as saved:
        metadata = saved.metadata()
        tensors = {key: saved.get_tensor(key) for key in saved.keys()}
    restored = [key for key in renames if key in tensors and renames[key] not in tensors]
    if restored:
        tensors = {renames[key] if key in restored else key: tensor for key, tensor in tensors.items()}
        save_file(tensors, path, metadata=metadata)
    return [renames[key] for key in restored]


def read_adapter_metadata(folder: str) -> dict:
    path = os.path.join(folder, ADAPTER_METADATA)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def adapter_folders(adapters, names=None) -> dict[str, str]:
    """Adapter name -> folder, from an adapter folder, a folder of adapter folders, or a list of either."""
    found = {}
    for path in [adapters] if isinstance(adapters, (str, os.PathLike)) else list(adapters):
        path = os.fspath(path)
        if os.path.isfile(os.path.join(path, "adapter_config.json")):
            candidates = [path]
        elif os.path.isdir(path):
            candidates = [os.path.join(path, d) for d in sorted(os.listdir(path))
                          if os.path.isfile(os.path.join(path, d, "adapter_config.json"))]
        else:
            raise FileNotFoundError(f"no adapter at {path}")
        if not candidates:
            raise FileNotFoundError(f"{path} holds no adapter (no adapter_config.json in it or its sub-folders)")
        for folder in candidates:
            found[read_adapter_metadata(folder).get("task") or os.path.basename(os.path.normpath(folder))] = folder
    if names is not None:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ValueError(f"unknown adapter(s) {unknown}; available: {', '.join(found)}")
        found = {n: found[n] for n in names}
    return found


def load_adapters(base, adapters, names=None, active: str | None = None):
    """A PEFT model: the base M2DINO (a folder, or a loaded `M2DinoForMultiTask` that this changes) with adapters
    loaded, each under its task's name, `active` (default: the first) switched on; switch with `set_adapter`.

    An adapter is refused when the base's weights are not the ones it was trained on; the tasks an adapter adds
    are added to the base first.
    """
    from peft import PeftModel

    model = load_base(base) if isinstance(base, (str, os.PathLike)) else base
    fingerprint = weights_fingerprint(model)
    folders = adapter_folders(adapters, names)
    metadata = {name: read_adapter_metadata(folder) for name, folder in folders.items()}
    for name, meta in metadata.items():
        if meta and meta["base_fingerprint"] != fingerprint:
            raise ValueError(
                f"adapter {folders[name]} was trained on the base model {meta['base_model']} (weights fingerprint "
                f"{meta['base_fingerprint'][:12]}), not on {model.name_or_path or 'the given model'} (fingerprint "
                f"{fingerprint[:12]}): load it onto its own base model"
            )
        for entry in meta.get("added_tasks", []):
            spec = TaskSpec.from_dict(entry)
            if spec.id not in model.config.task_ids:
                add_task(model, spec)
            elif model.config.task(spec.id) != spec:
                raise ValueError(f"adapter {folders[name]} adds task {spec.id!r}, which the model holds differently")
    for name, meta in metadata.items():
        # An adapter that adds tasks saved whole router tables: they fit only the task list it was trained with.
        if meta.get("added_tasks") and meta["tasks"] != model.config.task_ids:
            raise ValueError(
                f"adapter {folders[name]} was trained with tasks {meta['tasks']}, the model now has "
                f"{model.config.task_ids}: adapters that add different new tasks cannot be loaded together "
                "(merge one into the base first)"
            )
    peft_model = None
    for name, folder in folders.items():
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, folder, adapter_name=name)
        else:
            peft_model.load_adapter(folder, adapter_name=name)
    set_adapter(peft_model, active or next(iter(folders)))
    return peft_model.eval()


def set_adapter(peft_model, name: str):
    """`peft_model.set_adapter(name)`, with an error that lists the loaded adapters."""
    if name not in peft_model.peft_config:
        raise ValueError(f"unknown adapter {name!r}; loaded adapters: {', '.join(peft_model.peft_config)}")
    peft_model.set_adapter(name)


def merge_adapter(base, adapter: str, output_dir: str) -> str:
    """Merges one adapter into its base and saves a plain M2DINO folder (model, image processor, evaluation
    results, card) whose `default_task` is the adapter's task; `from_pretrained` loads it without PEFT."""
    peft_model = load_adapters(base, adapter)
    task_id = peft_model.active_adapter
    merged = peft_model.merge_and_unload()
    merged.config.default_task = task_id
    save_model_folder(merged, merged.name_or_path, output_dir)
    results = os.path.join(adapter, "eval_results.json")
    if os.path.isfile(results):
        with open(results, encoding="utf-8") as f:
            write_results(output_dir, json.load(f))
    write_card(output_dir)
    return output_dir


def save_model_folder(model, base_dir: str, output_dir: str):
    """The model and the base folder's image processor (or one from the model's config)."""
    model.save_pretrained(output_dir)
    try:
        processor = M2DinoImageProcessor.from_pretrained(base_dir)
    except (OSError, ValueError, TypeError):  # a base folder saved without its processor
        processor = M2DinoImageProcessor.from_config(model.config)
    processor.save_pretrained(output_dir)


def write_results(folder: str, results: dict):
    with open(os.path.join(folder, "eval_results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)


def write_card(folder: str, adapter_of: tuple | None = None, results: dict | None = None) -> str:
    """A model card, or (given `adapter_of` = (base_dir, task_id, method)) an adapter card."""
    from . import cards

    if adapter_of is None:
        return cards.write_model_card(folder)
    return cards.write_adapter_card(folder, *adapter_of, results=results)


__all__ = ["ADAPTER_METADATA", "adapter_folders", "load_adapters", "load_base", "merge_adapter", "save_adapter",
           "set_adapter", "weights_fingerprint"]
