"""Hub model cards for M2DINO folders and adapters, and `m2dino-card`.

    m2dino-card path/to/model                  # writes path/to/model/README.md

The metadata is built with `huggingface_hub` (`ModelCardData`, `EvalResult`), so the YAML always parses and
the `model-index` is the hub's own format; the body is a Jinja2 template from `m2dino_training.hub_cards`.
Every number in the `model-index` is copied from the folder's `eval_results.json` (never rounded, never
invented): a folder without results gets a card that says so and has no `model-index`.
"""

import argparse
import json
import math
import os
import re
from importlib.resources import files

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_m2dino.tasks import TaskSpec

from .task_types import TRAINING_TASK_TYPES, training_task_type

# Task types as the hub names them (for pipeline_tag and model-index task types), and the Auto class a user loads
# for the default task's type: each type's `pipeline_tag` and `auto_class`.
HUB_TASK_TYPES = {name: kind.pipeline_tag for name, kind in TRAINING_TASK_TYPES.items()}
AUTO_CLASSES = {name: kind.auto_class for name, kind in TRAINING_TASK_TYPES.items()}
TAGS = ["ultrasound", "medical-imaging", "mixture-of-experts", "multi-task", "dinov3", "m2dino"]
SYNTHETIC_DATASET_NAME = "FMC_UIA synthetic suite"
DINOV3_LICENCE = {
    "license": "other",
    "license_name": "dinov3-license",
    "license_link": "https://ai.meta.com/resources/models-and-libraries/dinov3-license",
}
PARADIGMS = {"ts": "task-specific (TS)", "cg": "clinically-grouped (CG)", "au": "all-task unified (AU)"}
ROUTER_TEXT = {
    "task": "every token of an image uses its task's experts",
    "token": "each token is routed from its hidden state plus a learned task embedding",
}
# Marks a README this module wrote, so tools may refresh it without clobbering a hand-written one.
MARKER = "m2dino-card"
RESULTS_FILE = "eval_results.json"
ROUTING_FILE = "routing.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CARD_OPTIONS = {"title", "description", "repo_id", "base_model", "tags", "datasets"}
# The card's first comment line records its options (JSON, '-' escaped so no '--' can end the comment).
_OPTIONS_LINE = re.compile(r"<!-- " + MARKER + r" (\{.*?\}) ")


def read_model_config(model_dir: str) -> dict:
    """The folder's config.json as a dict; a clear error when the folder is not an M2DINO model."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir} is not a folder")
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir} holds no config.json: it is not a saved model folder")
    with open(path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    if config.get("model_type") != "m2dino":
        raise ValueError(f"{path}: model_type is {config.get('model_type')!r}, not 'm2dino'")
    return config


def read_results(path: str) -> dict | None:
    """A results JSON (the `evaluate` format), or None when the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(results, dict) or not isinstance(results.get("tasks"), dict):
        raise ValueError(f"{path} has no 'tasks' mapping: not an m2dino results file")
    return results


def hub_reference(path: str) -> str:
    """How a card names a model it derives from: a hub id when one is known, else the folder's name.

    A DINOv3 folder saved from the hub records its id as `_name_or_path` in config.json; a bare local path
    means nothing to a reader of the card, so only its last component is kept.
    """
    path = str(path)
    config_file = os.path.join(path, "config.json")
    if os.path.isfile(config_file):
        try:
            with open(config_file, encoding="utf-8") as f:
                recorded = json.load(f).get("_name_or_path") or ""
        except (OSError, json.JSONDecodeError):
            recorded = ""
        if _HUB_ID.match(recorded) and not os.path.exists(recorded):
            return recorded
    if _HUB_ID.match(path) and not os.path.exists(path):
        return path
    return os.path.basename(os.path.normpath(path))


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value) -> str:
    """A number for the card body, to four significant digits (the metadata keeps the exact value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def dataset_of(results: dict | None) -> dict:
    """Name, hub-style type, split and provenance of the data a results file was scored on."""
    data = (results or {}).get("data")
    split = (results or {}).get("split")
    if isinstance(data, dict):
        split = data.get("eval_split", split)
        source = data.get("source")
    else:
        source = data
    if source == "synthetic":
        return {"name": SYNTHETIC_DATASET_NAME, "type": "synthetic", "split": split, "synthetic": True, "folder": None}
    if source:
        folder = os.path.basename(os.path.normpath(str(source)))
        return {"name": folder, "type": folder, "split": split, "synthetic": False, "folder": folder}
    return {"name": "held-out data", "type": "custom", "split": split, "synthetic": False, "folder": None}


def eval_results(results: dict) -> list[EvalResult]:
    """One `EvalResult` per (task, metric) with a finite value, exactly as the results file holds it.

    The task id goes into `dataset_config`: the hub groups results by (task type, dataset, config, split),
    so every task gets its own result entry even when several share a task type.
    """
    dataset = dataset_of(results)
    entries = []
    for task_id, result in results["tasks"].items():
        task_type = HUB_TASK_TYPES.get(result.get("type"), result.get("type") or "other")
        for metric, value in (result.get("metrics") or {}).items():
            if not is_number(value):  # NaN / inf have no YAML the hub accepts; the body says n/a
                continue
            entries.append(EvalResult(
                task_type=task_type, task_name=task_id, dataset_type=dataset["type"], dataset_name=dataset["name"],
                dataset_config=task_id, dataset_split=dataset["split"], metric_type=metric, metric_value=value,
            ))
    return entries


def licence(config: dict, base_model_dir: str | None = None) -> tuple[dict, str]:
    """Licence metadata and a sentence: Meta's DINOv3 licence when the weights descend from DINOv3."""
    upcycled = bool(config.get("base_model"))
    if not upcycled and base_model_dir and os.path.isfile(os.path.join(base_model_dir, "config.json")):
        with open(os.path.join(base_model_dir, "config.json"), encoding="utf-8") as f:
            upcycled = bool(json.load(f).get("base_model"))
    if upcycled:
        return dict(DINOV3_LICENCE), (
            f"the weights derive from Meta's DINOv3 and are governed by the [DINOv3 licence]({DINOV3_LICENCE['license_link']}); "
            "the m2dino code is Apache-2.0."
        )
    return {"license": "apache-2.0"}, "Apache-2.0 (code and weights trained from random initialisation; no DINOv3 weights)."


def _task_rows(config: dict) -> list[dict]:
    rows = []
    for task in config.get("tasks") or []:
        spec = TaskSpec.from_dict(task)  # a type it does not know is a ValueError naming the task
        kind = training_task_type(spec)
        count = kind.model_type.count(spec)
        singular, plural = kind.count_nouns
        unit = singular if count == 1 else plural
        rows.append({"id": task["id"], "type": task["type"], "group": task.get("group", "other"), "count": f"{count} {unit}"})
    return rows


def _training_section(results: dict | None) -> dict | None:
    if not results:
        return None
    data = results.get("data")
    if isinstance(data, dict) and data.get("source") == "synthetic":
        text = (f"the embedded synthetic ultrasound suite (scale {data.get('scale')}, {data.get('image_size')} px, "
                f"seed {data.get('seed')}), evaluated on its `{data.get('eval_split', 'test')}` split")
    elif data:
        source = data.get("source") if isinstance(data, dict) else data
        text = f"`{os.path.basename(os.path.normpath(str(source)))}`"
        if isinstance(data, dict) and data.get("eval_split"):
            text += f", evaluated on its `{data['eval_split']}` split"
    else:
        text = "not recorded"
    settings = [f"**{label}:** {results[key]}" for key, label in
                (("preset", "Preset"), ("max_steps", "Steps"), ("seed", "Seed"), ("router_mode", "Router mode"))
                if results.get(key) is not None]
    paradigm = results.get("paradigm")
    return {"paradigm": PARADIGMS.get(paradigm, paradigm or "not recorded"), "run": results.get("run"), "data": text,
            "settings": settings}


def _evaluation_section(results: dict | None) -> dict | None:
    if not results or not results.get("tasks"):
        return None
    rows, all_metrics = [], []
    for task_id, r in results["tasks"].items():
        key = r.get("primary_metric") or next(iter(r.get("metrics") or {}), "-")
        metrics, baseline, diff = r.get("metrics") or {}, r.get("baseline") or {}, r.get("difference") or {}
        ci = "-"
        if is_number(diff.get("ci95_lower")) and is_number(diff.get("ci95_upper")):
            ci = f"[{diff['ci95_lower']:+.3f}, {diff['ci95_upper']:+.3f}]"
        rows.append({
            "task": task_id, "type": r.get("type", "-"), "n_eval": r.get("n_eval", "-"), "n_train": r.get("n_train", "-"),
            "metric": key, "model": fmt(metrics.get(key)), "baseline": fmt(baseline.get(key)),
            "ci": ci, "beats": {True: "yes", False: "no"}.get(r.get("beats_baseline"), "-"),
        })
        all_metrics += [{"task": task_id, "metric": m, "model": fmt(v), "baseline": fmt(baseline.get(m))} for m, v in metrics.items()]
    dataset = dataset_of(results)
    return {"rows": rows, "all_metrics": all_metrics, "score": fmt(results.get("score")) if is_number(results.get("score")) else None,
            "split": dataset["split"] or "evaluation", "dataset": dataset["name"]}


def _figures(model_dir: str) -> tuple[list[dict], list[dict]]:
    """(plots, routing figures): PNGs in the folder or its `results/` subfolder, as relative links."""
    plots, routing = [], []
    for sub in ("", "results"):
        folder = os.path.join(model_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.lower().endswith(".png"):
                continue
            path = f"{sub}/{name}" if sub else name
            figure = {"path": path.replace(" ", "%20"), "alt": os.path.splitext(name)[0].replace("_", " ")}
            (routing if sub == "" and name.startswith("routing_") else plots).append(figure)
    return plots, routing


def _routing_summary(model_dir: str, top: int = 5) -> tuple[str | None, list[dict]]:
    """The routing method and the most alike task pairs from routing.json, when the folder has one."""
    path = os.path.join(model_dir, ROUTING_FILE)
    if not os.path.isfile(path):
        return None, []
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        tasks, similarity = report["tasks"], report["similarity"]
    except (OSError, json.JSONDecodeError, KeyError):
        return None, []
    pairs = [(similarity[i][j], tasks[i], tasks[j]) for i in range(len(tasks)) for j in range(i + 1, len(tasks))
             if is_number(similarity[i][j])]
    pairs.sort(key=lambda p: -p[0])
    return report.get("method"), [{"a": a, "b": b, "similarity": f"{s:.3f}"} for s, a, b in pairs[:top]]


def _template(name: str) -> str:
    return (files("m2dino_training.hub_cards") / name).read_text(encoding="utf-8")


def _render(card_data: ModelCardData, template: str, **context) -> ModelCard:
    """`ModelCard.from_template`, with the blank lines that template conditionals leave collapsed."""
    card = ModelCard.from_template(card_data, template_str=_template(template), marker=MARKER, **context)
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)).rstrip("\n") + "\n")


def model_card(model_dir: str, **extra) -> ModelCard:
    """The card of a saved M2DINO folder (see `write_model_card` for the options)."""
    unknown = set(extra) - _CARD_OPTIONS
    if unknown:
        raise TypeError(f"unknown card option(s) {sorted(unknown)}; valid: {sorted(_CARD_OPTIONS)}")
    config = read_model_config(model_dir)
    results = read_results(os.path.join(model_dir, RESULTS_FILE))
    folder_name = os.path.basename(os.path.normpath(os.path.abspath(model_dir)))
    repo_id = extra.get("repo_id") or folder_name
    tasks = _task_rows(config)
    default_task = config.get("default_task") or (tasks[0]["id"] if tasks else None)
    default_type = next((t["type"] for t in tasks if t["id"] == default_task), None)
    dataset = dataset_of(results)

    # A fine-tuned model names the M2DINO folder it came from; an upcycled one the DINOv3 checkpoint.
    base_dir = extra.get("base_model")
    base = hub_reference(base_dir) if base_dir else hub_reference(config["base_model"]) if config.get("base_model") else None
    licence_fields, licence_text = licence(config, base_dir)
    tags = list(TAGS) + sorted({HUB_TASK_TYPES[t["type"]] for t in tasks if t["type"] in HUB_TASK_TYPES})
    if dataset["synthetic"]:
        tags.append("synthetic-data")
    tags += list(extra.get("tags") or [])
    datasets = extra.get("datasets") or ([dataset["folder"]] if dataset["folder"] else None)

    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=HUB_TASK_TYPES.get(default_type), tags=tags, base_model=base,
        datasets=datasets, model_name=repo_id, eval_results=eval_results(results) if results else None,
        **licence_fields,
    )
    if not card_data.eval_results:  # no finite numbers at all: no model-index rather than an empty one
        card_data.eval_results = None
    plots, routing_figures = _figures(model_dir)
    routing_method, routing_pairs = _routing_summary(model_dir)
    if config.get("base_model"):
        init_text = (f"upcycled from the DINOv3 checkpoint `{hub_reference(config['base_model'])}` "
                     "(every expert starts as its layer's dense MLP).")
    else:
        init_text = "random (no pretrained backbone)."
    if base_dir:
        init_text += f" Fine-tuned from the M2DINO model `{base}`."
    arch_keys = ("num_hidden_layers", "hidden_size", "patch_size", "image_size", "num_experts", "num_experts_per_tok", "router_mode")
    options = json.dumps({k: v for k, v in extra.items() if v is not None}).replace("-", "\\u002d")
    return _render(
        card_data, "model_card.md", options=options,
        title=extra.get("title") or f"M2DINO: {folder_name}", description=extra.get("description"),
        tasks=tasks, default_task=default_task, pipeline_tag=HUB_TASK_TYPES.get(default_type),
        moe_layers=config.get("moe_layers") or [], arch={k: config.get(k) for k in arch_keys},
        router_text=ROUTER_TEXT.get(config.get("router_mode"), "see config.json"), init_text=init_text,
        licence_text=licence_text, training=_training_section(results), evaluation=_evaluation_section(results),
        figures=plots, routing_figures=routing_figures, routing_method=routing_method, routing_pairs=routing_pairs,
        auto_class=AUTO_CLASSES.get(default_type, "AutoModel"), repo_id=repo_id, folder_name=folder_name,
        synthetic=dataset["synthetic"],
    )


def write_model_card(model_dir: str, **extra) -> str:
    """Writes `README.md` into a saved M2DINO folder and returns its path.

    Options: `title`, `description` (a paragraph under the title), `repo_id` (the hub id the snippets load;
    default the folder name), `base_model` (the M2DINO folder a fine-tuned model came from), `tags` (extra
    tags), `datasets` (hub dataset ids).
    """
    card = model_card(model_dir, **extra)
    path = os.path.join(model_dir, "README.md")
    card.save(path)
    return path


def card_options(path: str) -> dict | None:
    """The options a README this module wrote was made with (None: not such a README, so never rewrite it)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    match = _OPTIONS_LINE.search(text)
    if not match:
        return None
    try:
        return {k: v for k, v in json.loads(match.group(1)).items() if k in _CARD_OPTIONS}
    except (json.JSONDecodeError, AttributeError):
        return {}


def update_model_card(model_dir: str, **changes) -> str:
    """Writes a folder's card (see `write_model_card`) and returns its path; a card this module wrote there keeps
    the options it was made with (repo id, title...) unless `changes` set them."""
    options = card_options(os.path.join(model_dir, "README.md")) or {}
    return write_model_card(model_dir, **{**options, **changes})


def refresh_model_card(model_dir: str, **extra) -> str | None:
    """Rewrites a folder's card with the options it was made with (updated by `extra`); a README this module did
    not write is left alone (returns None)."""
    previous = card_options(os.path.join(model_dir, "README.md"))
    if previous is None:
        return None
    return write_model_card(model_dir, **{**previous, **extra})


def _adapter_config(adapter_dir: str) -> dict | None:
    path = os.path.join(adapter_dir, "adapter_config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    targets = raw.get("target_modules")
    to_save = raw.get("modules_to_save")
    return {"peft_type": raw.get("peft_type", "?"), "r": raw.get("r"), "alpha": raw.get("lora_alpha"),
            "target_modules": targets if isinstance(targets, str) else ", ".join(sorted(targets or [])),
            "modules_to_save": ", ".join(to_save) if to_save else None}


def write_adapter_card(adapter_dir: str, base_model_dir: str, task_id: str, method: str, results: dict | None = None) -> str:
    """Writes `README.md` into a PEFT adapter folder and returns its path.

    `results` is either one task's entry of a results file (with `metrics`, optionally `type` and `data`) or
    a plain {metric: value} mapping; its finite numbers go into the `model-index` unchanged.
    """
    if not os.path.isdir(adapter_dir):
        raise FileNotFoundError(f"{adapter_dir} is not a folder")
    base_config = read_model_config(base_model_dir)
    spec = next((t for t in base_config.get("tasks") or [] if t["id"] == task_id), None)
    if results is not None and not isinstance(results, dict):
        raise TypeError(f"results must be a dict or None, got {type(results).__name__}")
    metrics = (results or {}).get("metrics", results) or {}
    task_type = (spec or {}).get("type") or (results or {}).get("type")
    dataset = dataset_of({"data": (results or {}).get("data"), "split": (results or {}).get("split")})
    # m2dino-finetune saves adapters as <method>/<task>/: the parent folder keeps the path meaningful.
    adapter_path = os.path.normpath(os.path.abspath(adapter_dir))
    adapter_ref = "/".join(adapter_path.split(os.sep)[-2:])
    base = hub_reference(base_model_dir)
    licence_fields, licence_text = licence(base_config)
    entries = [
        EvalResult(task_type=HUB_TASK_TYPES.get(task_type, task_type or "other"), task_name=task_id,
                   dataset_type=dataset["type"], dataset_name=dataset["name"], dataset_config=task_id,
                   dataset_split=dataset["split"], metric_type=name, metric_value=value)
        for name, value in metrics.items() if is_number(value)
    ]
    tags = ["peft", method.lower(), "m2dino", "ultrasound", "medical-imaging", f"task:{task_id}"]
    if task_type in HUB_TASK_TYPES:
        tags.append(HUB_TASK_TYPES[task_type])
    if dataset["synthetic"]:
        tags.append("synthetic-data")
    card_data = ModelCardData(
        library_name="peft", base_model=base, pipeline_tag=HUB_TASK_TYPES.get(task_type), tags=tags,
        model_name=f"{base}-{method}-{task_id}", eval_results=entries or None, **licence_fields,
    )
    split = f" `{dataset['split']}` split" if dataset["split"] else ""
    evaluation = None
    if entries:
        evaluation = {"where": f"Scored on {dataset['name']}{split} with the FMC_UIA challenge metrics.",
                      "metrics": [{"metric": e.metric_type, "value": fmt(e.metric_value)} for e in entries]}
    card = _render(
        card_data, "adapter_card.md",
        title=f"M2DINO {method} adapter: {task_id}", method_name=method, task_id=task_id, task_type=task_type,
        task_group=(spec or {}).get("group"), base_model=base, adapter=_adapter_config(adapter_dir),
        licence_text=licence_text, evaluation=evaluation, adapter_ref=adapter_ref, synthetic=dataset["synthetic"],
    )
    path = os.path.join(adapter_dir, "README.md")
    card.save(path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write a hub-ready README.md (model card) into an M2DINO model or adapter folder.")
    parser.add_argument("dir", help="saved model folder (or adapter folder with --adapter)")
    parser.add_argument("--repo_id", help="hub id the card's code snippets load (default: the folder name)")
    parser.add_argument("--title")
    parser.add_argument("--base_model", help="M2DINO folder this model (or adapter, with --adapter) was fine-tuned from")
    parser.add_argument("--adapter", action="store_true", help="DIR is a PEFT adapter; needs --base_model, --task, --method")
    parser.add_argument("--task", help="adapter: the task it serves")
    parser.add_argument("--method", default="LoRA", help="adapter: the PEFT method")
    parser.add_argument("--results", help="adapter: a JSON file with the adapter's metrics")
    args = parser.parse_args(argv)
    try:
        if args.adapter:
            if not args.base_model or not args.task:
                parser.error("--adapter needs --base_model and --task")
            results = None
            if args.results:
                with open(args.results, encoding="utf-8") as f:
                    results = json.load(f)
            path = write_adapter_card(args.dir, args.base_model, args.task, args.method, results)
        else:
            changes = {"repo_id": args.repo_id, "title": args.title, "base_model": args.base_model}
            path = update_model_card(args.dir, **{name: value for name, value in changes.items() if value})
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"m2dino-card: {error}") from None
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
