"""Images/s of ``train.py fit`` with the speedrun config vs a plain PyTorch loop doing the same work.

Both paths take everything from ``configs/speedrun/cifar10_94.yaml`` through the CLI: the airbench94
backbone (whitening computed from the training images before timing), batch 1024, 2-pixel translation with
alternating flip (``datamodule.augment_train_batch``), ``DecoupledSGD`` with the 64x BatchNorm-bias LR
(``model.build_optimizer``), ``TriangleLR``, label smoothing, and the Lookahead EMA. The Lightning side is
the CLI's own trainer with its default callbacks (checkpointing, throughput, LR monitor, CSV logger); the
plain side is a hand-written loop with airbench's Lookahead. The EMA starts at step 0 in both (the config
waits for epoch 3, which a short benchmark never reaches), so its cost is counted. Rounds alternate (plain,
Lightning, ...) in one process so drifts in machine load hit both alike; the first ``--warmup`` steps of
each round are not timed.

    python benchmarks/speedrun_overhead.py --steps 12 --warmup 2 --rounds 3     # real CIFAR-10 from ../shared
    python benchmarks/speedrun_overhead.py --device cuda --steps 100 --warmup 20  # GPU, images resident there

(The GPU comparison against airbench's own trainer, accuracy included, is ``speedrun_gpu.py``.)
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from common import DEFAULT_DATA, PlainLoop, StepTimer, add_device_argument, describe_device, prepared_for_fit

from lit_vision.callbacks import EMA
from lit_vision.cli import main as cli_main
from lit_vision.models.training.schedulers import build_scheduler

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "speedrun" / "cifar10_94.yaml"


def build(args: argparse.Namespace, *extra: str) -> object:
    """The CLI's model, datamodule and trainer for the speedrun config (nothing run yet)."""
    return cli_main(
        [
            "--config", str(CONFIG),
            f"--data.data_dir={args.data_dir}",
            "--ema.init_args.step_updates_from_epoch=0",  # see the module docstring
            f"--trainer.max_steps={args.steps}",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={args.log_dir}",
            f"--trainer.accelerator={args.device}",
            "--trainer.devices=1",
            # on a GPU the images live there, as in the plain loop: no per-step copies timed on either side
            f"--data.device_resident={str(args.device == 'cuda').lower()}",
            *extra,
        ],
        run=False,
    )  # fmt: skip


def lightning_round(args: argparse.Namespace) -> float:
    cli = build(args)
    timer = StepTimer(args.warmup, args.device)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return (args.steps - args.warmup) * args.batch_size / (timer.end - timer.start)


def plain_round(args: argparse.Namespace) -> float:
    cli = build(args)
    ema = next(c for c in cli.trainer.callbacks if isinstance(c, EMA))  # its decay and update period
    model, dm = prepared_for_fit(cli, args.device)
    optimizer = model.build_optimizer(batch_size=args.batch_size)
    scheduler = build_scheduler(model.scheduler_factory, optimizer, args.steps)
    average = None  # airbench's LookaheadState: float state, lerped toward the model, copied back
    loop = PlainLoop(dm, args)
    for step, epoch, idx in loop:
        x = dm.augment_train_batch(loop.images[idx], idx, epoch)
        loss = model.criterion(model(x), loop.targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % ema.update_every_n_steps == 0:
            state = [t for t in model.state_dict().values() if t.is_floating_point()]
            if average is None:
                average = [t.detach().clone() for t in state]
            else:
                rho = ema.decay * ((step + 1) / args.steps) ** ema.warmup_power
                torch._foreach_lerp_(average, state, 1 - rho)
                torch._foreach_copy_(state, average)
    return loop.images_per_second()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per round (batch 1024)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-dir", default="/tmp/lit_vision_bench")
    add_device_argument(parser)
    args = parser.parse_args()
    args.batch_size = yaml.safe_load(CONFIG.read_text())["data"]["batch_size"]  # for images/s
    warnings.filterwarnings("ignore")
    L.seed_everything(0, verbose=False)
    print(
        f"{describe_device(args.device)}, data {args.data_dir}, {CONFIG.name}, "
        f"{args.steps - args.warmup} timed steps x {args.rounds} rounds"
    )
    plain, lit = [], []
    for r in range(args.rounds):
        plain.append(plain_round(args))
        lit.append(lightning_round(args))
        print(f"round {r}: plain {plain[-1]:7.1f} img/s   train.py fit {lit[-1]:7.1f} img/s", flush=True)
    ratios = [q / p for p, q in zip(plain, lit, strict=True)]
    print(f"per-round ratio fit/plain: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(
        f"median: plain {statistics.median(plain):.1f} img/s, train.py fit {statistics.median(lit):.1f} img/s"
    )
    print(f"median paired ratio fit/plain = {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
