"""Training data order: resumable, rank-sharded batches over epochs, and the loader that serves them.

Kept free of diffusers/accelerate imports: spawned loader workers unpickle these classes and
should only pay for torch and the dataset's own modules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """This rank's part of each global batch, epoch after epoch, from batch ``start`` of ``epoch``.

    Each epoch is a seeded permutation cut into full global batches; items are ``(epoch, index)``
    so one loader (one set of worker processes) serves every epoch, and a dataset with
    ``set_epoch`` (dynamic compositing) still sees each item's epoch.
    """

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int = 0, start: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.size, self.batch_size, self.seed, self.epoch, self.start = size, batch_size, seed, epoch, start
        self.rank, self.world = rank, world
        self.batches_per_epoch = size // (batch_size * world)
        if self.batches_per_epoch == 0:
            raise ValueError(f"{size} training pairs are fewer than one global batch "
                             f"({batch_size} x {world} processes)")

    def __iter__(self):
        epoch, start, span = self.epoch, self.start, self.batch_size * self.world
        while True:
            generator = torch.Generator().manual_seed(seed_of(self.seed, epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
            for b in range(start, self.batches_per_epoch):
                first = b * span + self.rank * self.batch_size
                yield [(epoch, i) for i in order[first:first + self.batch_size]]
            epoch, start = epoch + 1, 0


class EpochItems(Dataset):
    """``dataset[(epoch, index)]``: sets the epoch (if the dataset draws per-epoch augmentations), then reads."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def make_loader(dataset: EpochItems, sampler: EpochBatches, num_workers: int, pin_memory: bool) -> DataLoader:
    # Lance datasets are not fork-safe: worker processes are spawned and open them lazily.
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                      multiprocessing_context="spawn" if num_workers else None)


def seed_of(*parts: int) -> int:
    """A 32-bit seed from integers (order matters): per-epoch permutations, per-(rank, step) noise."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def sample_timesteps(size: int, total: int, high_noise_share: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform training timesteps in [0, total), a ``high_noise_share`` of them redrawn from the noisier half
    (where the image is mostly unknown and the conditioning decides what is drawn)."""
    timesteps = torch.randint(0, total, (size,), generator=generator)
    if high_noise_share:
        noisier = torch.rand(size, generator=generator) < high_noise_share
        timesteps = torch.where(noisier, torch.randint(total // 2, total, (size,), generator=generator), timesteps)
    return timesteps
