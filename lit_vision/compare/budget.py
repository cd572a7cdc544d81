"""Fit a training schedule to a wall-clock budget: ``python -m lit_vision.compare.budget MINUTES -- ARGS``.

A fixed-time comparison is only fair if every model gets a *complete* schedule (warmup, decay to the end)
inside the budget: a slow model cut off by a timer mid-schedule is measured at a high learning rate. So
before a time-budgeted run, this module builds the run's model and datamodule from the same CLI arguments
(nothing is trained or written), times training steps on real augmented batches and one evaluation pass,
and picks ``max_epochs`` and ``limit_train_batches`` so that the planned steps plus the validation passes
take about ``SAFETY`` of the budget. ``trainer.max_time`` stays the hard stop in case the estimate is short.

What the timing leaves out: callbacks' extra work (FGSM's second pass, EMA updates) and logging. It runs in
a process of its own, so the campaign runner keeps no model, dataset or thread state from it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["SAFETY", "measure", "plan_schedule", "time_steps"]

#: share of the budget the plan fills; the rest absorbs logging, checkpointing and estimate error
SAFETY = 0.9
#: untimed steps first (kernel selection, allocator growth, thread-pool start)
WARMUP_STEPS = 2
#: then timed steps until both minimums are met: on a shared machine a slow moment of a few seconds
#: dominates a handful of steps, and a plan made from it leaves much of the budget unused (docs/results.md,
#: "Activations"); the median of a longer window is robust to such a moment
MIN_TIMED_STEPS = 10
MIN_TIMED_S = 15.0
#: a very slow model stops being timed here, after at least one step
MAX_TIMED_S = 60.0


def plan_schedule(
    budget_s: float,
    step_s: float,
    val_epoch_s: float,
    steps_per_epoch: int,
    safety: float = SAFETY,
) -> dict[str, Any]:
    """Epochs and batches per epoch whose training steps and validation passes fill ``safety * budget_s``.

    Returns ``max_epochs``, ``limit_train_batches`` (``None``: whole epochs) and ``planned_steps``. A model
    too slow for one epoch gets one shortened epoch (at least one step).
    """
    if min(budget_s, step_s) <= 0 or steps_per_epoch < 1:
        raise ValueError("budget_s and step_s must be > 0 and steps_per_epoch >= 1.")
    usable = safety * budget_s
    epochs = 1
    for _ in range(4):  # fixed point of: steps depend on how many validation passes the epochs cost
        steps = max(1.0, (usable - epochs * val_epoch_s) / step_s)
        epochs = max(1, round(steps / steps_per_epoch))
    per_epoch = max(1, min(steps_per_epoch, math.floor(steps / epochs)))
    return {
        "max_epochs": int(epochs),
        "limit_train_batches": None if per_epoch >= steps_per_epoch else int(per_epoch),
        "planned_steps": int(epochs * per_epoch),
    }


def time_steps(
    step: Callable[[], None],
    warmup: int | None = None,
    min_steps: int | None = None,
    min_s: float | None = None,
    max_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median seconds of one ``step()``, over at least ``min_steps`` steps and ``min_s`` seconds (whichever
    takes longer) after ``warmup`` untimed ones; timing stops early once ``max_s`` is spent. ``None``: the
    module's ``WARMUP_STEPS``, ``MIN_TIMED_STEPS``, ``MIN_TIMED_S``, ``MAX_TIMED_S``."""
    warmup = WARMUP_STEPS if warmup is None else warmup
    min_steps = MIN_TIMED_STEPS if min_steps is None else min_steps
    min_s = MIN_TIMED_S if min_s is None else min_s
    max_s = MAX_TIMED_S if max_s is None else max_s
    for _ in range(warmup):
        step()
    timings: list[float] = []
    while not timings or ((len(timings) < min_steps or sum(timings) < min_s) and sum(timings) < max_s):
        start = clock()
        step()
        timings.append(clock() - start)
    return statistics.median(timings)


def measure(cli_args: list[str]) -> dict[str, Any]:
    """Seconds per training step and per validation pass of the run ``cli_args`` describes."""
    from lit_vision.cli import main  # the CLI builds exactly the run's model and data

    cli = main([*cli_args, "--trainer.logger=false"], run=False)
    model, datamodule = cli.model, cli.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    steps_per_epoch = len(loader)
    val_batches = len(datamodule.val_dataloader())
    model.configure_model()
    model.train()
    # lr 0: the weights do not move, yet every step does the optimizer's full work
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    batches = iter(loader)

    def train_step() -> None:
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:  # a small dataset: timing goes on into a second pass
            batches = iter(loader)
            batch = next(batches)
        images, targets = batch[:2]
        # the batched path augments here, as on_after_batch_transfer does in training
        x = datamodule.batch_transform(images, train=datamodule.augment == "batched")
        loss = model.criterion(model(x), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s = time_steps(train_step)

    model.eval()
    val_iter = iter(datamodule.val_dataloader())
    with torch.no_grad():
        images = datamodule.batch_transform(next(val_iter)[0])
        model(images)  # warm-up
        start = time.perf_counter()
        model(images)
        eval_batch_s = time.perf_counter() - start
    return {
        "step_s": step_s,
        "val_epoch_s": eval_batch_s * val_batches,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": datamodule.batch_size,
        "train_images_per_s": datamodule.batch_size / step_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("minutes", type=float, help="training budget per run, in minutes")
    parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="-- then the train.py arguments")
    args = parser.parse_args(argv)
    cli_args = args.cli_args[1:] if args.cli_args[:1] == ["--"] else args.cli_args
    timing = measure(cli_args)
    plan = plan_schedule(
        args.minutes * 60, timing["step_s"], timing["val_epoch_s"], timing["steps_per_epoch"]
    )
    print(json.dumps({**timing, **plan, "budget_s": args.minutes * 60}))  # last line: read by the runner
    sys.stdout.flush()


if __name__ == "__main__":
    main()
