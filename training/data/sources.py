"""The data of a run: a training source and a held-out source from `--data`, and views of some of their tasks."""

import os

from modeling_m2dino.tasks import EXTRA_TASKS, FMC_UIA_TASKS

from .collate import task_list


class TaskSubset:
    """The examples of some tasks of a source (keeps `task_of`, so nothing is decoded to learn tasks)."""

    def __init__(self, source, tasks, task_of_index=None):
        task_of_index = task_of_index if task_of_index is not None else task_list(source)
        self.source = source
        self.indices = [i for i, t in enumerate(task_of_index) if t in set(tasks)]
        self.tasks = [task_of_index[i] for i in self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.source[self.indices[index]]

    def task_of(self, index):
        return self.tasks[index]


def synthetic_tasks(tasks=None) -> list:
    """The synthetic suite's tasks for a request: the challenge's 27, and the extra tasks (`EXTRA_TASKS`) it names."""
    requested = set(tasks or ())
    return list(FMC_UIA_TASKS) + [task for task in EXTRA_TASKS if task.id in requested]


def load_sources(data: str, seed: int, image_size: int, registry, tasks=None, on_error: str = "raise",
                 synthetic_scale: float = 1.0, eval_examples_per_task: int | None = None):
    """(training source, held-out source, description of the data) for `data`: "synthetic" (the suite's train
    and test splits, generated with `seed` at `image_size`) or a folder `load_data` reads (its train and val
    splits; `tasks`, `registry` and `on_error` go to the reader). A task the registry does not know, or a folder
    without a train or a val split, is a ValueError; a problem in the data is the reader's `DataError`."""
    if data == "synthetic":
        from .synthetic import TRAIN_SIZES, VAL_FRACTION, SyntheticUltrasoundSuite

        suite_tasks = synthetic_tasks(tasks)
        suite = SyntheticUltrasoundSuite(scale=synthetic_scale, image_size=image_size, seed=seed, tasks=suite_tasks)
        held_out = suite
        if eval_examples_per_task:  # the test split of a suite large enough to hold that many per task
            needed = eval_examples_per_task / (VAL_FRACTION * min(TRAIN_SIZES.values()))
            held_out = SyntheticUltrasoundSuite(scale=max(synthetic_scale, needed), image_size=image_size, seed=seed,
                                                tasks=suite_tasks)
        description = {"source": "synthetic", "scale": synthetic_scale, "image_size": image_size, "seed": seed,
                       "eval_split": "test"}
        return suite.dataset("train"), held_out.dataset("test"), description
    from .fmc_uia import format_load_report, load_report
    from .hf_folder import load_data

    if tasks:  # named before loading: rows of tasks not selected are not even checked
        unknown = sorted(set(tasks) - {t.id for t in registry})
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; valid: {', '.join(t.id for t in registry)}")
    loaded = load_data(data, tasks=tasks, registry=registry, on_error=on_error)
    print(format_load_report(load_report(next(iter(loaded.values())))), flush=True)
    if "val" not in loaded and "validation" in loaded:
        loaded["val"] = loaded["validation"]
    missing = [s for s in ("train", "val") if s not in loaded]
    if missing:
        raise ValueError(f"{data} has no {missing} split(s); found {list(loaded)}")
    description = {"source": os.path.abspath(data), "eval_split": "val", "loading": load_report(loaded["train"])}
    return loaded["train"], loaded["val"], description
