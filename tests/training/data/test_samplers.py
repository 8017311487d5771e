"""TaskBatchSampler: task mix, within-task coverage, determinism, exact resume, distributed slices."""

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from m2dino_training.data.samplers import TaskBatchSampler, task_counts, task_probabilities

# An imbalanced task list, interleaved the way a concatenated multi-source dataset might be.
SIZES = {"big": 600, "mid": 150, "small": 40, "tiny": 5}
TASKS = [task for task, n in SIZES.items() for _ in range(n)]
TASKS = [TASKS[i] for i in np.random.default_rng(0).permutation(len(TASKS))]


def tasks_of(batch):
    return {TASKS[i] for i in batch}


def test_task_counts_and_probabilities():
    counts = task_counts(TASKS)
    assert counts == {task: SIZES[task] for task in counts} and set(counts) == set(SIZES)
    assert task_counts(np.array(["a", "b", "a"])) == {"a": 2, "b": 1}  # numpy strings become str

    uniform = task_probabilities(counts, "uniform")
    assert all(p == pytest.approx(0.25) for p in uniform.values())
    proportional = task_probabilities(counts, "proportional")
    assert proportional["big"] == pytest.approx(600 / 795)
    tempered = task_probabilities(counts, "temperature", temperature=2.0)
    norm = sum(n**0.5 for n in SIZES.values())
    assert tempered["tiny"] == pytest.approx(5**0.5 / norm)
    assert task_probabilities(counts, "temperature", temperature=1.0) == pytest.approx(proportional)
    flat = task_probabilities(counts, "temperature", temperature=1e6)
    assert max(flat.values()) - min(flat.values()) < 1e-4
    explicit = task_probabilities(counts, {"big": 1.0, "tiny": 3.0})
    assert explicit == pytest.approx({"big": 0.25, "mid": 0.0, "small": 0.0, "tiny": 0.75})

    for bad in (dict(weighting="sqrt"), dict(weighting="temperature", temperature=0), dict(weighting={"nope": 1.0})):
        with pytest.raises(ValueError):
            task_probabilities(counts, **bad)


@pytest.mark.parametrize("weighting", ["uniform", "proportional", "temperature"])
def test_homogeneous_batches_hold_one_task_in_the_target_mix(weighting):
    sampler = TaskBatchSampler(TASKS, batch_size=8, mode="homogeneous", task_weighting=weighting, num_batches=1000)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 1000
    assert all(len(b) == 8 and len(tasks_of(b)) == 1 for b in batches)
    # Systematic sampling: every epoch's count is floor or ceil of its expectation.
    seen = Counter(TASKS[b[0]] for b in batches)
    for task, p in sampler.probabilities.items():
        assert abs(seen[task] - 1000 * p) < 1


@pytest.mark.parametrize("mode", ["homogeneous", "mixed"])
def test_frequencies_across_many_short_epochs(mode):
    # 3 batches per epoch is far fewer than the tasks' expected counts allow exactly; over many
    # epochs the mix still converges to the probabilities (chi-square, 3 d.o.f., p ~ 1e-4).
    sampler = TaskBatchSampler(TASKS, batch_size=4, mode=mode, task_weighting="temperature", temperature=2.0, num_batches=3)
    seen = Counter()
    for epoch in range(400):
        sampler.set_epoch(epoch)
        seen.update(TASKS[i] for batch in sampler for i in batch)
    total = sum(seen.values())
    chi2 = sum((seen[t] - total * p) ** 2 / (total * p) for t, p in sampler.probabilities.items())
    assert chi2 < 21.1


@pytest.mark.parametrize("weighting", ["uniform", "temperature"])
def test_mixed_batches_mix_tasks_in_the_target_mix(weighting):
    sampler = TaskBatchSampler(TASKS, batch_size=16, mode="mixed", task_weighting=weighting, num_batches=200)
    batches = list(sampler)
    assert sum(len(tasks_of(b)) > 1 for b in batches) > 150
    seen = Counter(TASKS[i] for b in batches for i in b)
    for task, p in sampler.probabilities.items():
        assert abs(seen[task] - 3200 * p) < 1


def test_mixed_proportional_is_a_shuffle_of_the_dataset():
    sampler = TaskBatchSampler(TASKS[:784], batch_size=16, mode="mixed", task_weighting="proportional")
    flat = [i for b in sampler for i in b]
    assert len(sampler) == 49 and sorted(flat) == list(range(784))
    assert flat != sorted(flat)


def test_within_a_task_examples_cycle_without_replacement():
    sampler = TaskBatchSampler(TASKS, batch_size=4, mode="homogeneous", task_weighting="uniform", num_batches=400)
    drawn = {task: [] for task in SIZES}
    for batch in sampler:
        drawn[TASKS[batch[0]]].extend(batch)
    for task, n in SIZES.items():
        indices = sorted(i for i, t in enumerate(TASKS) if t == task)
        order = drawn[task]
        # Each full pass over the task is a permutation of its examples: the small tasks repeat,
        # but only once everything else has been seen.
        for start in range(0, len(order) - n + 1, n):
            assert sorted(order[start : start + n]) == indices
    assert len(drawn["big"]) < SIZES["big"] * 2  # big is covered only partly, never repeated early
    assert len(set(drawn["big"])) == len(drawn["big"])


def test_length_rounding_and_validation():
    assert len(TaskBatchSampler(TASKS, 16)) == math.ceil(795 / 16)
    assert len(TaskBatchSampler(TASKS, 16, drop_last=True)) == 795 // 16
    assert len(TaskBatchSampler(TASKS, 16, num_replicas=4, rank=1)) == math.ceil(795 / 64)
    assert len(TaskBatchSampler(TASKS, 16, num_batches=7)) == 7
    for bad in (dict(batch_size=0), dict(batch_size=4, mode="random"), dict(batch_size=4, rank=2, num_replicas=2), dict(batch_size=1000, drop_last=True)):
        with pytest.raises(ValueError):
            TaskBatchSampler(TASKS, **bad)


def test_deterministic_from_seed_and_epoch():
    def epoch(seed, number):
        sampler = TaskBatchSampler(TASKS, 8, seed=seed)
        sampler.set_epoch(number)
        return list(sampler)

    assert epoch(1, 0) == epoch(1, 0)
    assert epoch(1, 0) != epoch(1, 1)
    assert epoch(1, 0) != epoch(2, 0)
    # A pass that ran to the end moves to the next epoch by itself.
    sampler = TaskBatchSampler(TASKS, 8, seed=1)
    list(sampler)
    assert sampler.state_dict()["epoch"] == 1 and list(sampler) == epoch(1, 1)


@pytest.mark.parametrize("mode", ["homogeneous", "mixed"])
def test_resume_continues_the_uninterrupted_sequence(mode):
    kwargs = dict(batch_size=8, mode=mode, task_weighting="temperature", seed=5, num_batches=20)
    uninterrupted = TaskBatchSampler(TASKS, **kwargs)
    uninterrupted.set_epoch(2)
    expected = list(uninterrupted) + list(uninterrupted)  # epochs 2 and 3

    first = TaskBatchSampler(TASKS, **kwargs)
    first.set_epoch(2)
    iterator = iter(first)
    taken = [next(iterator) for _ in range(7)]
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON survives a checkpoint
    assert state["epoch"] == 2 and state["batches_yielded"] == 7

    resumed = TaskBatchSampler(TASKS, **kwargs)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # what a training loop does at the top of the epoch: keeps the position
    rest = list(resumed)
    assert len(rest) == 13
    assert taken + rest == expected[:20]
    assert list(resumed) == expected[20:]  # and the next epoch follows

    with pytest.raises(ValueError, match="seed"):
        TaskBatchSampler(TASKS, **dict(kwargs, seed=6)).load_state_dict(state)


def test_distributed_ranks_are_disjoint_slices_of_one_sequence():
    replicas = 3
    ranks = [TaskBatchSampler(TASKS, 8, seed=2, num_replicas=replicas, rank=r) for r in range(replicas)]
    for sampler in ranks:
        sampler.set_epoch(4)
    per_rank = [list(sampler) for sampler in ranks]
    assert len({len(batches) for batches in per_rank}) == 1 and len(per_rank[0]) == len(ranks[0])
    global_sequence = ranks[0].epoch_batches(4)
    assert len(global_sequence) == replicas * len(ranks[0])
    interleaved = [per_rank[r][k] for k in range(len(per_rank[0])) for r in range(replicas)]
    assert interleaved == global_sequence  # together they are the whole sequence, each batch once
    # ... which is the sequence a single process with the same total would draw.
    single = TaskBatchSampler(TASKS, 8, seed=2, num_batches=len(global_sequence))
    single.set_epoch(4)
    assert list(single) == global_sequence


class _Indices(Dataset):
    def __len__(self):
        return len(TASKS)

    def __getitem__(self, index):
        return torch.tensor(index)


def test_works_as_a_dataloader_batch_sampler():
    sampler = TaskBatchSampler(TASKS, 8, num_batches=5)
    loader = DataLoader(_Indices(), batch_sampler=sampler)
    assert len(loader) == 5
    batches = [b.tolist() for b in loader]
    assert batches == sampler.epoch_batches(0)
