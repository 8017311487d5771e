"""From data examples to model batches: processing (with augmentation for training) and collation.

An example (any source) holds the image and its label in original pixels (see `m2dino_training.data`). Each
task type's `encode` (in `modeling_m2dino`) turns it into processed pixel values and the model's label dict;
the collator stacks those into `pixel_values`, `tasks` and `labels`, the three arguments a batch passes to
`M2DinoForMultiTask`. Each label dict also carries the example's `original_size` (height, width).
"""

import torch
from torch.utils.data import Dataset

from modeling_m2dino.image_processing_m2dino import image_size
from modeling_m2dino.task_types import TASK_TYPES

from ..task_types import training_task_type


def task_list(source) -> list[str]:
    """The task id of every example of a source, without decoding any image."""
    if hasattr(source, "task_of"):  # the synthetic suite
        return [source.task_of(i) for i in range(len(source))]
    if hasattr(source, "with_format"):  # a datasets.Dataset from the readers
        return list(source.with_format(None)["task"][:])
    return [example["task"] for example in source]


class ProcessedExamples(Dataset):
    """A source of examples, processed (and, with an augmenter, augmented) for one task registry.

    Items are requested by index, or by `(epoch, index)` from `EpochTaggedBatchSampler`: the augmentation
    of an example is a function of (seed, epoch, index) alone, whichever worker process draws it, so a
    resumed run sees exactly the images an uninterrupted one would.
    """

    def __init__(self, source, processor, task_specs, augmenter=None, seed: int = 0):
        self.source = source
        self.processor = processor
        self.specs = {task.id: task for task in task_specs}
        self.augmenter = augmenter
        self.seed = seed
        self.tasks = task_list(source)
        unknown = sorted(set(self.tasks) - set(self.specs))
        if unknown:
            raise ValueError(f"the data holds tasks the model does not have: {unknown}; model tasks: {sorted(self.specs)}")

    def __len__(self):
        return len(self.source)

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (0, item)
        example = self.source[int(index)]
        if self.augmenter is not None:
            example = self.augmenter(example, seed=self.seed, epoch=epoch, index=int(index))
        return encode_example(self.processor, self.specs[example["task"]], example)


def encode_example(processor, task, example: dict) -> dict:
    pixel_values, label = TASK_TYPES[task.type].encode(processor, example)
    label["original_size"] = torch.tensor(image_size(example["image"]))
    return {"pixel_values": pixel_values, "task": task.id, "label": label}


def collate(samples: list[dict]) -> dict:
    """Processed samples -> `pixel_values` (B, 3, S, S), `tasks` (B ids) and `labels` (B dicts)."""
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "tasks": [s["task"] for s in samples],
        "labels": [s["label"] for s in samples],
    }


class EpochTaggedBatchSampler:
    """Wraps a batch sampler so every index travels with its epoch: batches of `(epoch, index)` pairs."""

    def __init__(self, batch_sampler):
        self.batch_sampler = batch_sampler
        self.batch_size = batch_sampler.batch_size  # accelerate's split_batches reads it
        self.drop_last = False
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch
        self.batch_sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        for batch in self.batch_sampler:
            yield [(self.epoch, int(i)) for i in batch]

    def state_dict(self):
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state):
        self.batch_sampler.load_state_dict(state)


def references_of(task, examples: list[dict]):
    """The examples' labels in original pixels, in the form the metrics take."""
    references = [TASK_TYPES[task.type].reference(e) for e in examples]
    return training_task_type(task).stack(references)
