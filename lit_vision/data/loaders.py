"""Samplers and loaders: the sampler policy (seeded order, DDP shards) and a training DataLoader that resumes
mid-epoch where it stopped.

Lightning saves the ``state_dict`` of a train loader that has one in every checkpoint and restores it
before the loader is iterated again (the protocol of ``torchdata``'s ``StatefulDataLoader``). Ours records
how many batches of the current epoch it has handed out; restored from a mid-epoch checkpoint (SIGTERM,
Ctrl+C, a crash), the next epoch iterator starts after them, so the resumed run sees exactly the batches the
interrupted run had not seen yet, in the same (seed, epoch)-determined order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lit_vision.lightning_workarounds import uses_distributed_sampler
from lit_vision.seeding import run_seed

__all__ = ["ResumableDataLoader", "ResumableSampler", "make_sampler"]


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (order set by seed and epoch) that can start part-way into its epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0  # samples of this rank's shard to skip on the next iteration

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start = self.start, 0  # one-shot: later epochs start at the beginning
        return iter(indices[start:])


class ResumableDataLoader(DataLoader):
    """``DataLoader`` over a ``ResumableSampler`` with ``state_dict``/``load_state_dict`` (see module doc).

    ``len()`` stays the full epoch's batch count: Lightning counts the batches done before the stop itself.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler.")
        self._served = 0
        self._epoch = 0

    def __iter__(self) -> Iterator[Any]:
        # batches of this epoch served before a resume count as served: a second stop must know them
        self._served, self._epoch = self.sampler.start // (self.batch_size or 1), self.sampler.epoch
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches_served": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        served = int(state.get("batches_served", 0))
        if 0 < served < len(self):  # a mid-epoch checkpoint; an end-of-epoch one resumes at a new epoch
            self.sampler.start = served * (self.batch_size or 1)
            self._served = served


def make_sampler(dataset: Dataset, train: bool, trainer: Any | None) -> Sampler | None:
    """The sampler of a lit_vision loader (``trainer``: the running Trainer, or ``None``): seeded per epoch
    for training, duplicate-free shards under DDP.

    Training always uses a ``DistributedSampler`` (one replica when not distributed): its order is a
    function of (seed, epoch) alone, set by Lightning's ``set_epoch``, so a resumed run sees the same
    order as a straight one, and ``ResumableDataLoader`` skips what a mid-epoch checkpoint had seen.
    Under DDP, ``drop_last=True`` drops the < world_size tail instead of padding with repeated samples
    (Lightning's default), so in one epoch every sample is seen at most once across ranks. Evaluation
    under DDP: ``UnrepeatedDistributedSampler`` gives ranks uneven shards so every sample is counted
    exactly once (torchmetrics sums the per-rank states; evaluation needs no collective per step).
    Predict is left to Lightning, which already uses an unrepeated sampler there.
    """
    kwargs: dict[str, int] = {"num_replicas": 1, "rank": 0}
    if trainer is not None and trainer.world_size > 1:
        if not uses_distributed_sampler(trainer):
            return None  # the user asked to shard by hand
        kwargs = dict(trainer.distributed_sampler_kwargs or {})
    if train:
        seed = run_seed()  # what Lightning's own sampler would use
        return ResumableSampler(dataset, shuffle=True, seed=seed, drop_last=True, **kwargs)
    if kwargs["num_replicas"] > 1:
        return UnrepeatedDistributedSampler(dataset, shuffle=False, **kwargs)
    return None
