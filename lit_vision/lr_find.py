"""Learning-rate range test for any config: ``python -m lit_vision.lr_find --config CFG.yaml [--steps 100]``.

The test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", section 3.3; the "LR finder"
of fast.ai and Lightning) trains from the config's initial weights for ``--steps`` optimizer steps while the
learning rate grows geometrically from ``--min-lr`` to ``--max-lr``, records the loss, and suggests the
rate where the smoothed loss falls fastest. It stops early once the loss diverges (4x its best).

Why not Lightning's ``Tuner.lr_find``: it sets every parameter group to the same rate and writes the result
to a model attribute. Here the optimizer's groups keep their ratios (the no-decay group, the speedrun's 64x
BatchNorm-bias rate, a fine-tuned backbone's lower rate): the sweep multiplies each group's configured rate,
and the suggestion comes back in the config's own units (``model.optimizer.init_args.lr``; per 1024
examples for ``DecoupledSGD``). Everything else is the config's training (batch size, augmentation, mixed
precision, the MixUp/CutMix and FGSM tricks); the LR schedule is switched off for the sweep.

Writes ``lr_find.csv`` (step, lr, loss, smoothed loss) and ``lr_find.png`` (loss vs lr, the suggestion
marked) in ``--out``, prints the suggestion and the flags that use it.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from lit_vision.cli import TRICK_KEYS
from lit_vision.cli import main as cli_main
from lit_vision.errors import exit_on_error

__all__ = ["LRRangeTest", "LRSweep", "lr_find", "main", "suggest"]


@dataclass
class LRSweep:
    """What the range test measured: the config's rate, and per step the swept rate and the loss."""

    config_lr: float
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    #: each parameter group's rate at the last step, in torch's units (their ratios are the config's)
    group_lrs: list[float] = field(default_factory=list)
    suggestion: float | None = None


def suggest(lrs: Sequence[float], smoothed: Sequence[float], skip_begin: int = 5, skip_end: int = 2) -> float:
    """The rate where the smoothed loss falls fastest per unit of log-rate (the steepest negative slope),
    leaving out the first ``skip_begin`` points (the smoothing warms up) and the last ``skip_end`` (where a
    diverging loss makes the slope meaningless)."""
    lo, hi = skip_begin, len(lrs) - skip_end
    if hi - lo < 3:
        raise ValueError(
            f"Too few points for a suggestion ({len(lrs)} steps recorded; the loss may have diverged at "
            "once): run more --steps or lower --min-lr."
        )
    slope = np.gradient(np.asarray(smoothed[lo:hi]), np.log(np.asarray(lrs[lo:hi])))
    return float(lrs[lo + int(np.argmin(slope))])


class LRRangeTest(L.Callback):
    """Sweep the learning rate geometrically over the run's optimizer steps, each parameter group's rate
    scaled by the same factor (``min_lr`` .. ``max_lr`` in the units of ``config_lr``), and record the loss.

    Args:
        sweep: where the measurements go (its ``config_lr``: the configured rate the groups were built with).
        min_lr, max_lr: the sweep's ends, in the config's units.
        steps: optimizer steps of the sweep.
        beta: smoothing of the recorded loss (an exponential moving average, bias-corrected).
        diverge: stop once the smoothed loss exceeds this multiple of its minimum.
    """

    def __init__(
        self,
        sweep: LRSweep,
        min_lr: float,
        max_lr: float,
        steps: int,
        beta: float = 0.9,
        diverge: float = 4.0,
    ) -> None:
        if not 0 < min_lr < max_lr or steps < 2:
            raise ValueError(f"Need 0 < min_lr < max_lr and steps >= 2, got {min_lr}, {max_lr}, {steps}")
        self.sweep, self.min_lr, self.max_lr, self.steps = sweep, min_lr, max_lr, steps
        self.beta, self.diverge = beta, diverge
        self._base: list[float] = []
        self._factor = 1.0  # the multiplier on the configured rates, as last set
        self._avg = 0.0

    def lr_at(self, step: int) -> float:
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / (self.steps - 1))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._base = [group["lr"] for group in trainer.optimizers[0].param_groups]  # the config's rates

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        factor = self.lr_at(trainer.global_step) / self.sweep.config_lr
        groups = trainer.optimizers[0].param_groups
        for group in groups[len(self._base) :]:  # added during the sweep (a fine-tuning callback unfreezing):
            self._base.append(group["lr"] / self._factor)  # its rate relative to the others, as it was set
        for group, base in zip(groups, self._base, strict=True):
            group["lr"] = base * factor
        self._factor = factor

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if outputs is None:  # a skipped step (model.nonfinite_loss: skip)
            loss = math.nan
        else:  # one host sync per step: this is a measurement
            loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
        step = len(self.sweep.losses)
        groups = trainer.optimizers[0].param_groups
        # the rate this batch trained with, in config units (exact also with gradient accumulation)
        self.sweep.lrs.append(groups[0]["lr"] / self._base[0] * self.sweep.config_lr)
        self.sweep.losses.append(loss)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smoothed = self._avg / (1 - self.beta ** (step + 1))
        self.sweep.smoothed.append(smoothed)
        self.sweep.group_lrs = [group["lr"] for group in groups]
        if not math.isfinite(loss) or smoothed > self.diverge * min(self.sweep.smoothed):
            trainer.should_stop = True  # diverged: the rest of the sweep says nothing


def lr_find(
    cli_args: Sequence[str],
    min_lr: float = 1e-6,
    max_lr: float = 10.0,
    steps: int = 100,
    out: str | Path = ".",
) -> LRSweep:
    """Run the range test for the config the CLI arguments ``cli_args`` describe (``--config ...`` and
    overrides, no subcommand); write ``lr_find.csv`` and ``lr_find.png`` under ``out``."""
    cli = cli_main([*cli_args, "--model.scheduler=null"], run=False)
    init_args = cli.config.model.optimizer.get("init_args") or {}
    if init_args.get("lr") is None:
        raise ValueError(
            f"The optimizer {cli.config.model.optimizer.get('class_path')} has no lr argument to sweep."
        )
    config_lr = float(init_args["lr"])
    sweep = LRSweep(config_lr=config_lr)
    tricks = [c for c in cli.trainer.callbacks if isinstance(c, tuple(TRICK_KEYS.values()))]
    tricks = [c for c in tricks if not isinstance(c, TRICK_KEYS["early_stopping"])]  # no validation here
    trainer_config = cli.config.trainer
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator=trainer_config.accelerator,
        devices=1,
        precision=trainer_config.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=trainer_config.enable_progress_bar is not False,
        callbacks=[LRRangeTest(sweep, min_lr, max_lr, steps), *tricks],
    )
    trainer.fit(cli.model, datamodule=cli.datamodule)
    sweep.suggestion = suggest(sweep.lrs, sweep.smoothed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "lr_find.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        for step, row in enumerate(zip(sweep.lrs, sweep.losses, sweep.smoothed, strict=True)):
            writer.writerow([step, *(f"{v:.6g}" for v in row)])
    _plot(sweep, out / "lr_find.png")
    return sweep


def _plot(sweep: LRSweep, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sweep.lrs, sweep.losses, color="0.75", linewidth=1, label="loss")
    ax.plot(sweep.lrs, sweep.smoothed, color="C0", label="smoothed")
    if sweep.suggestion is not None:
        ax.axvline(sweep.suggestion, color="C3", linestyle="--", label=f"suggestion {sweep.suggestion:.3g}")
    ax.set(xscale="log", xlabel="learning rate (config units)", ylabel="training loss", title="LR range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> LRSweep:
    parser = argparse.ArgumentParser(
        prog="python -m lit_vision.lr_find",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every other argument goes to the training CLI: --config FILE (repeatable), --model.*, ...",
    )
    parser.add_argument("--min-lr", type=float, default=1e-6, help="start of the sweep (config units)")
    parser.add_argument("--max-lr", type=float, default=10.0, help="end of the sweep (config units)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of the sweep (default 100)")
    parser.add_argument("--out", default=".", help="folder for lr_find.csv and lr_find.png (default: .)")
    args, cli_args = parser.parse_known_args(argv)
    with exit_on_error(ValueError):
        sweep = lr_find(cli_args, args.min_lr, args.max_lr, args.steps, args.out)
    stopped = f" (stopped at step {len(sweep.lrs)}: the loss diverged)" if len(sweep.lrs) < args.steps else ""
    print(f"swept {sweep.lrs[0]:.3g} .. {sweep.lrs[-1]:.3g} over {len(sweep.lrs)} steps{stopped}")
    print(f"suggested learning rate: {sweep.suggestion:.4g}  (the config has {sweep.config_lr:.4g})")
    print(f"use it: --model.optimizer.init_args.lr {sweep.suggestion:.4g}")
    print(
        "with OneCycleLR, set its peak instead or as well: --model.scheduler.init_args.max_lr "
        f"{sweep.suggestion:.4g}; see {Path(args.out) / 'lr_find.png'}"
    )
    return sweep


if __name__ == "__main__":
    main()
