"""Batch samplers for multi-task training: which examples of which tasks form each batch.

`TaskBatchSampler` yields lists of dataset indices (pass it as a DataLoader's `batch_sampler`). It
knows only the task of each dataset index, so it works for any data source.

How an epoch is built (all of it from `np.random.SeedSequence([seed, epoch])`, nothing else):

1. How often each task appears. `task_probabilities` turns the task sizes into p_t: "uniform"
   (1/K), "proportional" (n_t / N) or "temperature" (n_t^(1/T), normalised: T=1 is proportional,
   large T approaches uniform), or an explicit mapping task -> weight. The epoch's task counts are
   drawn by systematic sampling: every task gets floor(expected) or ceil(expected) slots, with the
   expectation exactly G * p_t. That keeps the realised mix at the target mix in every epoch (a
   plain multinomial draw would leave a small task out of some epochs by chance) while a task whose
   expected count is below one still appears in the right fraction of epochs.
2. Which examples. Each task draws from its own shuffled permutation without replacement and
   reshuffles when exhausted, so a small task repeats (a batch of a task smaller than the batch
   holds repeats) and a large one is covered before anything repeats. The permutations restart
   each epoch, which keeps an epoch a pure function of (seed, epoch): resuming never needs a replay.
3. Modes. "homogeneous": each batch holds one task, the batch's task drawn as in (1) (a natural fit
   for per-task heads and losses, one forward per batch). "mixed": each sample's task is drawn as
   in (1) and the samples are shuffled across batches; with "proportional" weighting this is plain
   shuffling of the whole dataset.

Batches are always full (the streams cycle), so `drop_last` only chooses how the epoch length is
rounded: floor instead of ceil of N / (batch_size * num_replicas).

Distributed: all ranks build the same global sequence of `len(self) * num_replicas` batches and rank
r takes batches r, r + R, r + 2R, ... (R = num_replicas). Ranks are disjoint slices of one sequence,
all of the same length, and together they are exactly the single-process sequence of that length.
This is also how accelerate's `BatchSamplerShard` splits a batch sampler, so under the Trainer with
accelerate keep `num_replicas=1` and let accelerate shard; set `num_replicas`/`rank` yourself only
in a loop of your own.

Resume: `state_dict()` is `{"epoch", "batches_yielded", "seed"}` and `load_state_dict` makes the next
iteration skip the batches already yielded in that epoch. Caveat: a DataLoader pulls indices ahead
of training (worker prefetch; accelerate also reads one batch ahead), so the sampler's own count can
exceed the batches the model has seen. Save `{"epoch": e, "batches_yielded": steps_done_in_epoch}`
from the training loop's count when that matters. Use either this state or the Trainer's own batch
skipping (`ignore_data_skip=False`) for a resume, never both, or the skipped batches are skipped
twice.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["TaskBatchSampler", "task_counts", "task_probabilities", "WEIGHTINGS", "MODES"]

WEIGHTINGS = ("uniform", "proportional", "temperature")
MODES = ("homogeneous", "mixed")


def task_counts(task_of_index: Sequence[Hashable]) -> dict:
    """Task -> number of examples, tasks in order of first appearance."""
    counts: dict = {}
    for task in task_of_index:
        task = _plain(task)
        counts[task] = counts.get(task, 0) + 1
    return counts


def task_probabilities(counts: Mapping, weighting="uniform", temperature: float = 2.0) -> dict:
    """Task -> sampling probability, from task sizes.

    weighting: "uniform" (1/K), "proportional" (n_t / N), "temperature" (n_t^(1/T) normalised), or a
    mapping task -> non-negative weight (a task missing from it gets weight 0, i.e. is not sampled).
    Tasks with no examples get probability 0.
    """
    tasks = list(counts)
    sizes = np.array([counts[t] for t in tasks], dtype=np.float64)
    if (sizes < 0).any():
        raise ValueError(f"task counts must be >= 0, got {dict(counts)}")
    if isinstance(weighting, Mapping):
        unknown = set(weighting) - set(tasks)
        if unknown:
            raise ValueError(f"weights given for tasks with no examples: {sorted(map(str, unknown))}")
        weights = np.array([float(weighting.get(t, 0.0)) for t in tasks])
        if (weights < 0).any() or not np.isfinite(weights).all():
            raise ValueError(f"task weights must be finite and >= 0, got {dict(weighting)}")
    elif weighting == "uniform":
        weights = np.ones_like(sizes)
    elif weighting == "proportional":
        weights = sizes.copy()
    elif weighting == "temperature":
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        weights = sizes ** (1.0 / temperature)
    else:
        raise ValueError(f"unknown task weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)} or a mapping task -> weight")
    weights = np.where(sizes > 0, weights, 0.0)
    if weights.sum() <= 0:
        raise ValueError("no task has both examples and a positive weight")
    return {t: float(w) for t, w in zip(tasks, weights / weights.sum())}


def _plain(task):
    # numpy scalars (np.str_, np.int64) become plain Python values, so dict keys and JSON stay simple.
    return task.item() if isinstance(task, np.generic) else task


def _systematic_counts(probs: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts summing to `total`, each floor or ceil of total * p, with expectation total * p.

    The remainders (each < 1, summing to the number of extra slots k) are laid out in a random order
    on a line; k points spaced 1 apart from a uniform offset each hit a different remainder, so task t
    gets its extra slot with probability exactly its remainder.
    """
    expected = probs * total
    counts = np.floor(expected).astype(np.int64)
    extra = int(round(total - counts.sum()))
    if extra > 0:
        order = rng.permutation(len(probs))
        edges = np.cumsum((expected - counts)[order])
        hits = np.searchsorted(edges, rng.random() + np.arange(extra), side="right")
        counts[order[np.minimum(hits, len(probs) - 1)]] += 1
    return counts


class _Cycle:
    """Endless stream over `items`: a shuffled permutation, reshuffled each time it runs out."""

    def __init__(self, items: np.ndarray, rng: np.random.Generator):
        self.items, self.rng = items, rng
        self.order, self.pos = items[:0], 0

    def take(self, k: int) -> np.ndarray:
        chunks = []
        while k > 0:
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(self.items), 0
            n = min(k, len(self.order) - self.pos)
            chunks.append(self.order[self.pos : self.pos + n])
            self.pos += n
            k -= n
        return np.concatenate(chunks) if chunks else self.items[:0]


class TaskBatchSampler(Sampler):
    """Multi-task batch sampler (see the module docstring for the scheme).

    task_of_index: the task id of each dataset index.
    batch_size: examples per batch (per rank).
    mode: "homogeneous" (one task per batch) or "mixed".
    task_weighting: "uniform", "proportional", "temperature" or a mapping task -> weight.
    temperature: T of the temperature weighting.
    seed: with the epoch, the only source of randomness.
    drop_last: round the epoch length down instead of up (batches are always full).
    num_batches: batches per epoch for each rank; default ceil(N / (batch_size * num_replicas)).
    num_replicas, rank: each rank takes every num_replicas-th batch of the global sequence.
    """

    def __init__(
        self,
        task_of_index: Sequence[Hashable],
        batch_size: int,
        mode: str = "homogeneous",
        task_weighting="uniform",
        temperature: float = 2.0,
        seed: int = 0,
        drop_last: bool = False,
        num_batches: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if int(num_replicas) < 1 or not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got rank {rank!r} of {num_replicas!r}")
        tasks = [_plain(t) for t in task_of_index]
        if not tasks:
            raise ValueError("task_of_index is empty")
        self.batch_size, self.mode, self.seed = int(batch_size), mode, int(seed)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.task_weighting, self.temperature = task_weighting, temperature
        self.counts = task_counts(tasks)
        self.probabilities = task_probabilities(self.counts, task_weighting, temperature)
        self.tasks = list(self.counts)
        codes = {t: i for i, t in enumerate(self.tasks)}
        task_code = np.array([codes[t] for t in tasks])
        self.indices_of_task = [np.flatnonzero(task_code == i) for i in range(len(self.tasks))]
        self.num_examples = len(tasks)

        if num_batches is None:
            per_step = self.batch_size * self.num_replicas
            num_batches = self.num_examples // per_step if drop_last else math.ceil(self.num_examples / per_step)
            if num_batches == 0:
                raise ValueError(
                    f"{self.num_examples} examples make no full global batch of {per_step} with drop_last=True; "
                    "pass num_batches or drop_last=False"
                )
        if int(num_batches) < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches!r}")
        self.num_batches = int(num_batches)
        self.drop_last = drop_last
        self.epoch = 0
        self.batches_yielded = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def __len__(self) -> int:
        """Batches per epoch on this rank (the full epoch, also while resuming mid-epoch)."""
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch. Setting the epoch the sampler is already in keeps a loaded resume point."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch, self.batches_yielded = epoch, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_yielded": self.batches_yielded, "seed": self.seed}

    def load_state_dict(self, state: Mapping) -> None:
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"sampler state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
        yielded = int(state["batches_yielded"])
        if not 0 <= yielded <= self.num_batches:
            raise ValueError(f"batches_yielded {yielded} is outside this sampler's epoch of {self.num_batches} batches")
        self.epoch, self.batches_yielded = int(state["epoch"]), yielded

    def __iter__(self):
        batches = self.epoch_batches(self.epoch)[self.rank :: self.num_replicas]
        for i in range(self.batches_yielded, len(batches)):
            # Counted before the yield, so a state saved after receiving batch i resumes at i + 1.
            self.batches_yielded = i + 1
            yield batches[i]
        # A finished pass moves on, so iterating again without set_epoch gives fresh batches; a
        # set_epoch(epoch + 1) from the training loop then changes nothing.
        self.epoch, self.batches_yielded = self.epoch + 1, 0

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """The global batch sequence of `epoch` (all ranks, interleaved), a pure function of (seed, epoch)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._build(epoch))
        return self._cache[1]

    def _build(self, epoch: int) -> list[list[int]]:
        total = self.num_batches * self.num_replicas
        plan_seq, *task_seqs = np.random.SeedSequence([self.seed, epoch]).spawn(1 + len(self.tasks))
        rng = np.random.default_rng(plan_seq)
        streams = [_Cycle(idx, np.random.default_rng(s)) for idx, s in zip(self.indices_of_task, task_seqs)]
        probs = np.array([self.probabilities[t] for t in self.tasks])

        if self.mode == "homogeneous":
            batch_tasks = np.repeat(np.arange(len(self.tasks)), _systematic_counts(probs, total, rng))
            rng.shuffle(batch_tasks)
            flat = np.concatenate([streams[t].take(self.batch_size) for t in batch_tasks])
        elif self.task_weighting == "proportional":
            # Mixed and proportional is plain shuffling of the whole dataset, cycled.
            flat = _Cycle(np.arange(self.num_examples), rng).take(total * self.batch_size)
        else:
            slot_tasks = np.repeat(np.arange(len(self.tasks)), _systematic_counts(probs, total * self.batch_size, rng))
            rng.shuffle(slot_tasks)
            flat = np.empty(len(slot_tasks), dtype=np.int64)
            for t in range(len(self.tasks)):
                where = np.flatnonzero(slot_tasks == t)
                flat[where] = streams[t].take(len(where))
        return [batch.tolist() for batch in flat.reshape(total, self.batch_size)]
