"""Your own backbone: an ``nn.Module`` given to the CLI by class path, trained, rebuilt from its checkpoint.

    python examples/custom_backbone.py                   # generated tiny data, 4 optimizer steps
    python examples/custom_backbone.py --data-dir data/mydata --steps 200 --out runs/examples

The class path is ``custom_backbone.TinyNet``: this file's folder is on ``sys.path`` when it runs as a script,
and the checkpoint stores ``{class_path, init_args}``, so ``predict.py``, ``report``, ``explain``, ``export``
and ``load_classifier`` rebuild the module, given the same import path (``PYTHONPATH=examples``). The same
run from a shell:

    PYTHONPATH=examples python train.py fit --data.dataset imagefolder --data.data_dir data/tiny \\
        --model.backbone.class_path custom_backbone.TinyNet --model.backbone.init_args.num_classes 3

In Python, ``ImageClassifier(backbone=TinyNet(num_classes=3), num_classes=3)`` takes the module object itself
(see ``train_from_python.py`` for the Trainer around it); such a checkpoint cannot rebuild its backbone, so
load it with ``model.load_state_dict(torch.load(path)["state_dict"])`` into a model built the same way.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from torch import nn

from lit_vision.cli import main as cli_main
from lit_vision.data.sources import list_class_dirs
from lit_vision.data.synthetic import make_imagefolder
from lit_vision.models.inference.classifier_loading import load_classifier


class TinyNet(nn.Module):
    """Two convolutions, global average pooling, a linear head: images (N, 3, H, W) -> logits (N, classes).

    Args:
        num_classes: outputs of the head; must equal the dataset's number of classes.
        width: channels of the convolutions.
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/tiny"), help="ImageFolder tree")
    parser.add_argument("--out", type=Path, default=Path("runs/examples"), help="trainer.default_root_dir")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps")
    args = parser.parse_args(argv)

    if not (args.data_dir / "train").is_dir():
        make_imagefolder(args.data_dir, 3, n_train=20, n_test=6)
        print(f"wrote a tiny generated image folder to {args.data_dir}")
    num_classes = len(list_class_dirs(args.data_dir / "train"))

    # cli_main takes the arguments a shell would pass to train.py; this script's own flags are not for it
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")

    cli = cli_main(
        [
            "fit",
            "--model.backbone.class_path=custom_backbone.TinyNet",
            f"--model.backbone.init_args.num_classes={num_classes}",
            "--model.backbone.init_args.width=8",
            "--data.dataset=imagefolder",
            f"--data.data_dir={args.data_dir}",
            "--data.val_size=0.2",
            "--data.batch_size=16",
            f"--trainer.max_steps={args.steps}",
            f"--trainer.default_root_dir={args.out}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.log_every_n_steps=1",
        ]
    )
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    model = load_classifier(last)  # rebuilds TinyNet from the class path the checkpoint stores
    print(f"rebuilt {type(model.backbone).__name__} from {last}")
    return last


if __name__ == "__main__":
    main()
