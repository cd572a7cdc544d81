"""Images/s of ``trainer.fit`` vs a plain PyTorch loop doing the same work, interleaved in one process.

Both paths use the same backbone, batch size, batched on-device augmentation (``BatchAugment``), optimizer
and per-step LR schedule, on the same in-memory data; the first ``--warmup`` steps of each round are not
timed. Rounds alternate (plain, Lightning, plain, ...) so drifts in machine load hit both alike.

    python benchmarks/fit_overhead.py                       # real CIFAR-10 from ../shared
    python benchmarks/fit_overhead.py --synthetic           # random images, no dataset needed
    python benchmarks/fit_overhead.py --device cuda         # on the GPU (data moved there once, both sides)
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import lightning as L
import torch
from common import PlainLoop, StepTimer, add_data_arguments, load_data, timed_trainer

from lit_vision.data import ImageDataModule
from lit_vision.models import ImageClassifier


def make_model(args: argparse.Namespace) -> ImageClassifier:
    return ImageClassifier(
        backbone=args.backbone,
        num_classes=10,
        label_smoothing=0.2,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        scheduler=lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=args.steps + 1),
        channels_last=True,
    )


def lightning_round(dm: ImageDataModule, args: argparse.Namespace) -> float:
    model = make_model(args)
    timer = StepTimer(args.warmup, args.device)
    trainer = timed_trainer(args, [timer], L.pytorch.loggers.CSVLogger(args.log_dir, name="fit_overhead"))
    trainer.fit(model, datamodule=dm)
    return (args.steps - args.warmup) * args.batch_size / (timer.end - timer.start)


def plain_round(dm: ImageDataModule, args: argparse.Namespace) -> float:
    model = make_model(args).to(args.device)
    model.configure_model()  # channels_last, exactly as Lightning calls it
    model.train()
    optimizer = torch.optim.SGD(
        model.parameter_groups(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=args.steps + 1)
    loop = PlainLoop(dm, args)
    for _, _, idx in loop:
        x = dm.batch_transform(loop.images[idx], train=True)
        loss = model.criterion(model(x), loop.targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return loop.images_per_second()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_arguments(parser)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    dm = load_data(args)
    print(f"{args.steps - args.warmup} timed steps x {args.rounds} rounds")

    plain, lit = [], []
    for r in range(args.rounds):
        plain.append(plain_round(dm, args))
        lit.append(lightning_round(dm, args))
        print(f"round {r}: plain {plain[-1]:7.1f} img/s   lightning {lit[-1]:7.1f} img/s")
    # Paired ratios cancel slow drifts in machine load; best-of ignores rounds hit by other processes.
    ratios = [q / p for p, q in zip(plain, lit, strict=True)]
    print(f"per-round ratio lightning/plain: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median: plain {statistics.median(plain):.1f} img/s, lightning {statistics.median(lit):.1f} img/s")
    print(f"median paired ratio lightning/plain = {statistics.median(ratios):.3f}")
    print(f"best-of ratio lightning/plain = {max(lit) / max(plain):.3f}")


if __name__ == "__main__":
    main()
