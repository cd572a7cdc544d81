"""What a config trains on: ``python -m lit_vision.augment_preview --config CFG.yaml [--images 8 --draws 6]``.

Builds the config's datamodule (no checkpoint, no model training), takes the first ``--images`` training
images and writes a grid: one row per image, the image as decoded, then ``--draws`` independent draws of the
training augmentation, exactly as that config applies it (the batched path with its crop, flip, Cutout,
policies, colour jitter and erasing; or the per-sample albumentations / torchvision pipeline). Draw ``k``
counts as epoch ``k``, so an alternating flip shows its alternation. Every other argument goes to the
training CLI (``--config`` repeatable, ``--data.*`` overrides).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from lit_vision.cli import main as cli_main
from lit_vision.data.augmentation import augmented_views
from lit_vision.data.sources import DatasetError
from lit_vision.errors import exit_on_error

__all__ = ["augment_preview", "main"]


def augment_preview(
    cli_args: Sequence[str], out: str | Path, images: int = 8, draws: int = 6, scale: int = 4, seed: int = 0
) -> Path:
    """Write the grid for the config that ``cli_args`` describe; return its path."""
    if images < 1 or draws < 1 or scale < 1:
        raise ValueError(f"Need images, draws and scale >= 1, got {images}, {draws}, {scale}")
    cli = cli_main(list(cli_args), run=False)
    dm = cli.datamodule
    dm.prepare_data()
    # "validate", not "fit": no train loader runs here, so a folder smaller than one batch still previews
    dm.setup("validate")
    originals = dm.train_images(images)  # (n, 3, H, W) uint8, as decoded
    torch.manual_seed(seed)
    columns = [originals] + [
        augmented_views(originals, dm.hparams, dm.mean, dm.std, epoch=k) for k in range(draws)
    ]
    grid = torch.stack(columns, 1).flatten(0, 1).float() / 255  # row-major: image i, then its draws
    if scale > 1:
        grid = F.interpolate(grid, scale_factor=scale, mode="nearest")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(grid, nrow=draws + 1, padding=2 * scale, pad_value=1.0), path)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m lit_vision.augment_preview",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=8, help="training images, one row each (default 8)")
    parser.add_argument("--draws", type=int, default=6, help="augmented draws per image (default 6)")
    parser.add_argument("--scale", type=int, default=4, help="pixel upscaling of the grid (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--out", default="augment_preview.png", help="PNG to write")
    args, cli_args = parser.parse_known_args(argv)
    with exit_on_error(ValueError, DatasetError):
        path = augment_preview(cli_args, args.out, args.images, args.draws, args.scale, args.seed)
    print(f"wrote {path}: {args.images} training images x (original + {args.draws} augmented draws)")
    return path


if __name__ == "__main__":
    main()
