"""Data-pipeline throughput beside training throughput (the data side must not be what limits training).

`measure_data_pipeline` times, in one run: synthetic images generated per second (one process), then the
full loader (generation + augmentation + processing + collation) through a `DataLoader` with worker
processes, then the training step of a model of the requested preset on the same image size, so the ratio
of the two is measured side by side on the same machine. `python -m m2dino_training.data.throughput` prints it.
"""

import time

import torch
from torch.utils.data import DataLoader

from modeling_m2dino import M2DinoConfig, M2DinoForMultiTask, M2DinoImageProcessor

from .augment import Augmenter
from .collate import EpochTaggedBatchSampler, ProcessedExamples, collate
from .samplers import TaskBatchSampler
from .synthetic import SyntheticUltrasoundSuite


def _images_per_second(count: int, seconds: float) -> float:
    return count / max(seconds, 1e-9)


def measure_data_pipeline(preset: str = "small", image_size: int = 224, batch_size: int = 32, num_workers: int = 2,
                          num_batches: int = 8, train_batch_size: int = 8, train_steps: int = 3, seed: int = 0) -> dict:
    suite = SyntheticUltrasoundSuite(scale=1.0, image_size=image_size, seed=seed)
    source = suite.dataset("train")
    count = batch_size * num_batches
    source[0]  # the first example builds the generator's cached kernels and fields

    start = time.perf_counter()
    for index in range(count):
        source[index * 7 % len(source)]
    generated = _images_per_second(count, time.perf_counter() - start)

    config = M2DinoConfig.from_preset(preset, image_size=image_size)
    processor = M2DinoImageProcessor.from_config(config)
    dataset = ProcessedExamples(source, processor, config.task_specs, Augmenter(), seed=seed)
    sampler = EpochTaggedBatchSampler(TaskBatchSampler(dataset.tasks, batch_size, mode="mixed", seed=seed))
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                        persistent_workers=num_workers > 0)
    iterator = iter(loader)
    next(iterator)  # workers started and warm
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    loaded = _images_per_second(count, time.perf_counter() - start)
    del iterator, loader

    torch.manual_seed(seed)
    model = M2DinoForMultiTask(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = collate([dataset[i * 13 % len(dataset)] for i in range(train_batch_size)])
    timings = []
    for _ in range(train_steps + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - start)
    trained = _images_per_second(train_batch_size, sorted(timings[1:])[len(timings[1:]) // 2])
    return {
        "image_size": image_size, "preset": preset, "num_workers": num_workers,
        "synthetic_images_per_s": generated,
        "loader_images_per_s": loaded,
        "train_images_per_s": trained,
        "loader_over_train": loaded / trained,
        "target_loader_over_train": 5.0,
    }


def main(argv=None):
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Data pipeline vs training throughput, side by side.")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    figures = measure_data_pipeline(args.preset, args.image_size, args.batch_size, args.num_workers)
    print(f"| figure ({args.preset}, {args.image_size} px) | images/s |\n|---|---|")
    print(f"| synthetic generation (1 process) | {figures['synthetic_images_per_s']:.1f} |")
    print(f"| loader + augmentation + collation ({args.num_workers} workers) | {figures['loader_images_per_s']:.1f} |")
    print(f"| training step (forward + backward + AdamW) | {figures['train_images_per_s']:.1f} |")
    print(f"| loader / training | {figures['loader_over_train']:.1f}x (target >= 5x) |")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main()
