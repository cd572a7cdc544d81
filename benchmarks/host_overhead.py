"""Host time per training step that ``train.py fit`` adds to a plain PyTorch loop doing the same work (CPU).

At negligible compute (a few-channel net, a batch of a few 32x32 images) a step's wall time is almost all
host time: Python, Lightning's loop, the module's bookkeeping, callbacks, and the launch cost of each
kernel. Both sides run the same net, optimizer, scheduler, batched augmentation and each trick's own math
(EMA/Lookahead averaging, MixUp/CutMix, the FGSM pass, all through the callbacks' public functions), so the
difference is the overhead that a GPU would wait on. The ``train.py fit`` side is the real CLI path: a
config (and fragment) parsed by ``lit_vision.cli``, its default callbacks, logger and progress bar.

A round times ``--steps`` optimizer steps after ``--warmup`` untimed ones, all inside the first epoch (no
validation or checkpoint in the window), as whole loop iterations: from one batch's start to the next, so
the loader, the logger connector and the progress bar are inside. Rounds alternate (plain, fit, plain,
...) so drifts in machine load hit both alike; the figure is the median over rounds of the paired
difference, with its min..max. ``--split`` adds one profiled round per variant (Lightning's
``SimpleProfiler``) and the same parts timed in the plain loop: data, forward+loss, backward, optimizer,
each callback, and the rest (Lightning's loop).

    python benchmarks/host_overhead.py                          # every variant, 5 rounds
    python benchmarks/host_overhead.py --variants default speedrun --rounds 7 --split
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from common import prepared_for_fit
from lightning.pytorch.profilers import SimpleProfiler

from lit_vision.callbacks import EMA, FGSM, MixUpCutMix
from lit_vision.callbacks.ema import ema_decay
from lit_vision.cli import main as cli_main
from lit_vision.data.synthetic import make_imagefolder
from lit_vision.models.training.schedulers import build_scheduler

ROOT = Path(__file__).resolve().parents[1]
TINY_COMPACT = "--model.backbone_kwargs={width: 0.125}"  # a few channels: compute stays negligible
# Variant -> CLI arguments on top of the generated data. "default" is the CLI's own defaults.
VARIANTS: dict[str, list[str]] = {
    "default": [TINY_COMPACT],
    "speedrun": [
        f"--config={ROOT / 'configs/speedrun/cifar10_94.yaml'}",
        "--model.backbone_kwargs={widths: [4, 8, 8]}",
        "--ema.init_args.step_updates_from_epoch=0",  # the Lookahead EMA inside the timed steps
    ],
    **{
        f"trick:{path.stem}": [f"--config={path}", TINY_COMPACT]
        for path in sorted((ROOT / "configs" / "tricks").glob("*.yaml"))
    },
}
# every trick file updates nothing per step except these (TTA: test time; early stopping: epoch end)
STEP_CALLBACKS = (EMA, FGSM, MixUpCutMix)


class LoopClock(L.Callback):
    """Times of each batch start (host clock); with a profiler, clears its records at the first timed step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.starts = warmup, []
        self.profile: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())
        if batch_idx == self.warmup and isinstance(trainer.profiler, SimpleProfiler):
            trainer.profiler.recorded_durations.clear()

    def on_train_end(self, trainer, pl_module) -> None:
        if isinstance(trainer.profiler, SimpleProfiler):  # read before the profiler's teardown
            records = trainer.profiler.recorded_durations
            self.profile = {k: sum(v) for k, v in records.items()}
            self.counts = {k: len(v) for k, v in records.items()}

    def per_step(self) -> float:
        """Seconds per whole loop iteration over the timed window (batch start to the next batch start)."""
        timed = self.starts[self.warmup :]
        return (timed[-1] - timed[0]) / (len(timed) - 1)


def build(args: argparse.Namespace, variant: str, *extra: str):
    total = args.warmup + args.steps + 1  # one more step: the last timed iteration ends at a batch start
    return cli_main(
        [
            *VARIANTS[variant],
            "--data.dataset=imagefolder",
            f"--data.data_dir={args.data}",
            f"--data.batch_size={args.batch_size}",
            "--data.val_size=20",
            f"--trainer.default_root_dir={args.log_dir}",
            f"--trainer.max_steps={total}",
            "--seed_everything=0",
            *extra,
        ],
        run=False,
    )


def fit_round(args: argparse.Namespace, variant: str, profile: bool = False) -> LoopClock:
    # the profiler's table goes to a file: only its records are used
    profiler = [
        "--trainer.profiler=lightning.pytorch.profilers.SimpleProfiler",
        f"--trainer.profiler.init_args.dirpath={args.log_dir}",
        "--trainer.profiler.init_args.filename=profile",
    ]
    cli = build(args, variant, *(profiler if profile else []))
    clock = LoopClock(args.warmup)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return clock


def plain_round(args: argparse.Namespace, variant: str) -> tuple[float, dict[str, float]]:
    """A hand-written loop over the same model, optimizer, data and trick math; (seconds per step, parts)."""
    cli = build(args, variant)
    model, dm = prepared_for_fit(cli)
    tricks = {type(c): c for c in cli.trainer.callbacks if isinstance(c, STEP_CALLBACKS)}
    optimizer = model.build_optimizer(batch_size=args.batch_size)
    total = args.warmup + args.steps + 1
    scheduler = (
        build_scheduler(model.scheduler_factory, optimizer, total) if model.scheduler_factory else None
    )
    train = dm.split("train")
    average: list[torch.Tensor] | None = None
    parts: dict[str, float] = defaultdict(float)
    step, starts = 0, []

    @contextmanager
    def part(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        if step >= args.warmup:
            parts[name] += time.perf_counter() - t0

    while step < total:
        perm = torch.randperm(len(train.indices))
        for i in range(len(perm) // args.batch_size):
            starts.append(time.perf_counter())
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            with part("data"):
                x = dm.augment_train_batch(train.images[idx], train.indices[idx], 0)
                y = train.targets[idx]
            if MixUpCutMix in tricks:
                with part("MixUpCutMix"):
                    x, y = tricks[MixUpCutMix].mix(x, y, model.num_classes)
            if FGSM in tricks and step % tricks[FGSM].adv_every == 0:
                with part("FGSM"):
                    fgsm = tricks[FGSM]
                    adv = fgsm.craft(model, x, y, fgsm.eps)
                    x, y = torch.cat([x, adv]), torch.cat([y, y])
            with part("forward+loss"):
                loss = model.criterion(model(x), y)
            with part("optimizer"):
                optimizer.zero_grad(set_to_none=True)
            with part("backward"):
                loss.backward()
            with part("optimizer"):
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            step += 1
            if EMA in tricks:
                with part("EMA"):
                    average = ema_step(tricks[EMA], model, average, step, total)
            if step == total:
                break
    timed_starts = starts[args.warmup :]
    steps = len(timed_starts) - 1
    return (timed_starts[-1] - timed_starts[0]) / steps, {k: v / steps for k, v in parts.items()}


@torch.no_grad()
def ema_step(ema: EMA, model, average: list[torch.Tensor] | None, step: int, total: int):
    """The EMA callback's update (every ``update_every_n_steps``; Lookahead copies the average back)."""
    if not ema.should_update(step_idx=step - 1):
        return average
    state = [t for t in model.state_dict().values() if t.is_floating_point()]
    if average is None:
        return [t.detach().clone() for t in state]
    decay = ema_decay(ema.decay, ema.warmup, ema.warmup_power, step, step, total)
    torch._foreach_lerp_(average, state, 1 - decay)
    if ema.lookahead:
        torch._foreach_copy_(state, average)
    return average


# hooks Lightning calls inside the optimizer step's closure (training_step, zero_grad, backward)
IN_CLOSURE = (
    "on_before_zero_grad",
    "optimizer_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "configure_gradient_clipping",
    ".training_step",
    ".backward",
)


# the module's own records inside the strategy's (training_step, backward) and the transfer (batch_to_device)
INSIDE_OTHERS = (
    "Classifier.training_step",
    "Classifier.backward",
    "Classifier.transfer_batch_to_device",
    "Classifier.on_before_batch_transfer",
    "Classifier.on_after_batch_transfer",
)


def split(
    profile: dict[str, float], counts: dict[str, int], steps: int, per_step: float, plain: dict[str, float]
) -> list[str]:
    """ms per step of each part: ``train.py fit`` (profiled), the plain loop, and the difference. Nested
    profiler records (hooks inside the optimizer step's closure) are counted once, in their own row."""
    # each per-step hook runs once a step: its mean per call (the window's first and last steps are cut
    # at different hooks, so totals would be off by a part of one step)
    per_step_actions = {k: v / counts[k] for k, v in profile.items() if counts[k] >= steps}
    fit: dict[str, float] = defaultdict(float)
    for key, value in per_step_actions.items():
        if key in (
            "[_TrainingEpochLoop].train_dataloader_next",
            "[Strategy]SingleDeviceStrategy.batch_to_device",
        ):
            fit["data"] += value
        elif key == "[Strategy]SingleDeviceStrategy.training_step":
            fit["training_step"] += (
                value  # batch transforms (MixUp/CutMix, FGSM), forward, loss, metrics, logs
            )
        elif key == "[Strategy]SingleDeviceStrategy.backward":
            fit["backward"] += value
        elif key.endswith(".optimizer_step") and key.startswith("[LightningModule]"):
            nested = sum(
                v
                for k, v in per_step_actions.items()
                if k.endswith(IN_CLOSURE) and not k.endswith(INSIDE_OTHERS)
            )
            fit["optimizer"] += value - nested
        elif key.endswith(".lr_scheduler_step"):
            fit["optimizer"] += value
        elif key.startswith("[Callback]"):
            fit["callback " + key[len("[Callback]") :].split("{")[0].split(".")[0]] += value
        elif key.startswith("[LightningModule]") and not key.endswith(INSIDE_OTHERS):
            fit["module hooks"] += value
    fit["Lightning loop (rest)"] = per_step - sum(fit.values())
    # the plain loop's counterparts: its trick math runs where fit runs it
    mine = {
        "data": plain.get("data", 0.0),
        "training_step": sum(plain.get(k, 0.0) for k in ("forward+loss", "MixUpCutMix", "FGSM")),
        "backward": plain.get("backward", 0.0),
        "optimizer": plain.get("optimizer", 0.0),
        "callback EMA": plain.get("EMA", 0.0),
    }
    rows = [f"    {'part':30s} {'fit':>8s} {'plain':>8s} {'added':>8s}  (ms per step; fit profiled)"]
    order = sorted(fit, key=lambda k: (k.startswith("Lightning"), k.startswith("callback"), -fit[k]))
    for name in order:
        value, other = fit[name], mine.get(name, 0.0)
        rows.append(f"    {name:30s} {value * 1e3:8.3f} {other * 1e3:8.3f} {(value - other) * 1e3:8.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=120, help="timed optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--split", action="store_true", help="add one profiled round per variant")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the host cost, not compute)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="host_overhead_") as work:
        per_class = (args.warmup + args.steps + 2) * args.batch_size // 10 + 10  # one epoch holds the window
        args.data = make_imagefolder(Path(work) / "data", classes=10, n_train=per_class, n_test=None)
        args.log_dir = Path(work) / "runs"
        print(
            f"CPU, {torch.get_num_threads()} thread(s), batch {args.batch_size}, {args.steps} timed steps "
            f"after {args.warmup}, {args.rounds} rounds; ms of host time per step"
        )
        print(f"{'variant':22s} {'fit':>8s} {'plain':>8s} {'overhead (median, min..max)':>30s}")
        for variant in args.variants:
            measure(args, variant)


def measure(args: argparse.Namespace, variant: str) -> None:
    """Interleaved rounds of one variant, its line of the table and (``--split``) its parts."""
    fit, plain, extra = [], [], []
    for _ in range(args.rounds):
        plain_s, parts = plain_round(args, variant)
        fit_s = fit_round(args, variant).per_step()
        plain.append(plain_s * 1e3)
        fit.append(fit_s * 1e3)
        extra.append(fit[-1] - plain[-1])
    print(
        f"{variant:22s} {statistics.median(fit):8.3f} {statistics.median(plain):8.3f} "
        f"{statistics.median(extra):12.3f} ({min(extra):.3f}..{max(extra):.3f})",
        flush=True,
    )
    if args.split:
        clock = fit_round(args, variant, profile=True)
        rows = split(clock.profile, clock.counts, args.steps, clock.per_step(), parts)
        print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
