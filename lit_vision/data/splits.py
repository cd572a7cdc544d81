"""The seeded train/validation split and the training images' channel statistics (cached on disk).

Both are functions of the data and a seed alone, so every rank of a DDP run and every resumed run computes
the same split and the same statistics without communicating.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from lit_vision.data.sources import DatasetError, cached_json, write_json

__all__ = ["channel_moments", "channel_stats", "seeded_split", "training_order"]

# 16 Mi values: two float64 copies of 128 MiB each per pass (CIFAR: 5,461 images, 128 px: 341)
_MOMENT_CHUNK_PIXELS = 1 << 24


def _permutation(n: int, val_size: int | float, seed: int, where: str) -> tuple[Tensor, int]:
    """The split's seeded permutation of ``range(n)`` and the held-out count (its first ``n_val`` entries)."""
    n_val = round(val_size * n) if isinstance(val_size, float) and val_size < 1 else int(val_size)
    if not 0 <= n_val < n or (n_val == 0 and val_size != 0):
        raise DatasetError(
            f"val_size={val_size} must leave images for both splits: the train split of {where} has {n} "
            f"images (use a count below {n}, a fraction such as 0.1, or 0 to train on every image without "
            "validation)."
        )
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)), n_val


def seeded_split(
    n: int, val_size: int | float, seed: int, where: str = "the dataset"
) -> tuple[Tensor, Tensor]:
    """``(train_idx, val_idx)``, each sorted: ``val_size`` images (a count, or a fraction if < 1) held out
    of ``n`` by a permutation drawn from ``seed`` (a CPU generator: the same on every rank and every run).

    Raises:
        DatasetError: when ``val_size`` would leave one of the splits empty (0 means no validation).
    """
    perm, n_val = _permutation(n, val_size, seed, where)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def training_order(n: int, val_size: int | float, seed: int, where: str = "the dataset") -> Tensor:
    """The train split's indices in the split permutation's own (seeded, random) order.

    Source folders list images class by class, so anything that takes "the first k training images" must
    take them in this order to get a sample of every class: the streaming shards store the training images
    in it (every shard file, and every window litdata shuffles within, then holds all classes), and
    ``train_images`` reads its first k on both back-ends (the same images on both).
    """
    perm, n_val = _permutation(n, val_size, seed, where)
    return perm[n_val:]


def channel_stats(
    images: Tensor, indices: Tensor, cache_dir: Path, key: object
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std in [0, 1] units of ``images[indices]`` (uint8, (N, 3, H, W)), cached in
    ``cache_dir`` by the indices, a sample of the pixels and ``key`` (what names the dataset)."""
    digest = hashlib.sha1(indices.numpy().tobytes())
    digest.update(images[:: max(1, len(images) // 64)].numpy().tobytes())
    digest.update(repr(key).encode())
    cache_file = Path(cache_dir) / f"stats-{digest.hexdigest()[:16]}.json"
    if (hit := cached_json(cache_file)) is not None:
        return tuple(hit["mean"]), tuple(hit["std"])  # type: ignore[return-value]
    per_chunk = min(4096, max(1, _MOMENT_CHUNK_PIXELS // max(1, images[0].numel())))  # bounded copies
    mean, std = channel_moments(images[chunk] for chunk in indices.split(per_chunk))
    write_json(cache_file, {"mean": mean, "std": std})
    return tuple(mean), tuple(std)  # type: ignore[return-value]


def channel_moments(batches: Iterable[Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units over uint8 batches (n, 3, H, W), summed in float64 chunk by
    chunk (exact sums without a copy of the whole set): the memory back-end's statistics and the shards'."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for batch in batches:
        # float64 copies of at most _MOMENT_CHUNK_PIXELS uint8 values at a time, whatever the image size
        for part in batch.split(max(1, _MOMENT_CHUNK_PIXELS // max(1, batch[0].numel()))):
            x = part.to(torch.float64) / 255.0
            total += x.sum((0, 2, 3))
            total_sq += (x * x).sum((0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()
