"""Train from Python: an ``ImageDataModule``, an ``ImageClassifier`` and a Lightning ``Trainer``, no YAML.

    python examples/train_from_python.py                        # generated tiny data, 4 optimizer steps
    python examples/train_from_python.py --data-dir data/mydata --steps 200 --out runs/examples

``--data-dir`` is any ImageFolder tree (``train/<class>/*``, optional ``test/``); when it does not exist, a
tiny generated one (3 classes of 32x32 PNGs) is written there first. The trained model is saved as
``<out>/model.ckpt``, which ``examples/predict_from_python.py`` and ``predict.py`` read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from lit_vision import ImageClassifier, ImageDataModule
from lit_vision.console import quiet_lightning
from lit_vision.data.synthetic import make_imagefolder


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/tiny"), help="ImageFolder tree")
    parser.add_argument("--out", type=Path, default=Path("runs/examples"), help="where the run goes")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps")
    args = parser.parse_args(argv)

    if not (args.data_dir / "train").is_dir():
        make_imagefolder(args.data_dir, 3, n_train=20, n_test=6)
        print(f"wrote a tiny generated image folder to {args.data_dir}")

    quiet_lightning()  # drops Lightning's adverts and notices no setting here can change
    L.seed_everything(0)
    data = ImageDataModule(dataset="imagefolder", data_dir=args.data_dir, val_size=0.2, batch_size=16)
    # num_classes and class_names are what the CLI links from the datamodule; mean/std and the input size
    # are copied from it when training starts (ImageClassifier.setup), so the checkpoint carries them.
    model = ImageClassifier(
        backbone="compact_cifar",
        backbone_kwargs={"width": 0.5},
        num_classes=data.num_classes,
        class_names=data.classes,
        label_smoothing=0.1,
    )
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        logger=CSVLogger(args.out, name="train_from_python"),  # metrics.csv
        enable_checkpointing=False,  # saved once, below
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    ckpt = args.out / "model.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)  # the model without the optimizer state
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    print(f"val/acc {metrics['val/acc']:.3f} after {trainer.global_step} steps")
    print(f"checkpoint: {ckpt}")
    return ckpt


if __name__ == "__main__":
    main()
