"""GPU readiness, run on a CUDA machine: what the CPU test suite cannot show (docs/ddp-gpu.md).

1. every ``trainer.precision`` mode: a short fit + test + predict with every trick on (EMA, MixUp/CutMix,
   FGSM, TTA), losses finite;
2. ``model.compile`` with the same tricks: graph breaks and recompiles (torch._dynamo's counters);
3. host-device syncs: ``torch.cuda.set_sync_debug_mode("warn")`` over 20 training steps of the default
   config, of the speedrun config and of every trick together, each sync reported with its Python frame;
4. a profiler table of one training step (``--trace``: also its Chrome trace);
5. images/s of ResNet-18 (batch 512) for eager vs compile and 32-true vs bf16-mixed.

    python benchmarks/gpu_check.py --data-dir ../shared/data/cifar10 [--only precision,syncs] [--trace DIR]
"""

from __future__ import annotations

import argparse
import collections
import time
import traceback
import warnings
from pathlib import Path

import lightning as L
import torch
from common import DEFAULT_DATA

from lit_vision.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TRICKS = [str(ROOT / f"configs/tricks/{name}.yaml") for name in ("ema", "mixing", "fgsm", "tta")]
PRECISIONS = ["32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true"]


def build(args: argparse.Namespace, configs: list[str], *flags: str):
    """The CLI's model, datamodule and GPU trainer for ``configs`` + ``flags`` (nothing run yet)."""
    argv = [a for c in configs for a in ("--config", c)]
    argv += [
        f"--data.data_dir={args.data_dir}",
        "--trainer.accelerator=gpu",
        "--trainer.devices=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={args.log_dir}",
        *flags,
    ]
    return cli_main(argv, run=False)


def check_precisions(args: argparse.Namespace) -> None:
    print("\n== 1. precision modes, every trick on (EMA, MixUp/CutMix, FGSM, TTA)", flush=True)
    for precision in PRECISIONS:
        try:
            cli = build(
                args,
                [str(ROOT / "configs/cifar10_compact.yaml"), *TRICKS],
                f"--trainer.precision={precision}",
                "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=30",
                "--trainer.limit_val_batches=4",
                "--trainer.limit_test_batches=4",
                "--trainer.limit_predict_batches=2",
            )
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            loss = float(cli.trainer.callback_metrics["train/loss_epoch"])
            tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
            probs = torch.cat(cli.trainer.predict(cli.model, datamodule=cli.datamodule))
            ok = torch.isfinite(torch.tensor(loss)) and torch.allclose(probs.sum(-1), torch.ones(len(probs)))
            print(
                f"{precision:>10s}: {'ok' if ok else 'NOT FINITE'}  train loss {loss:.3f}  test loss "
                f"{tested['test/loss']:.3f}  "  # accuracy means nothing on 4 class-sorted batches
                f"predict {tuple(probs.shape)} {probs.dtype}",
                flush=True,
            )
        except Exception as error:  # report every mode, not just the first failure
            print(f"{precision:>10s}: FAILED {type(error).__name__}: {error}", flush=True)
            traceback.print_exc(limit=-4)


def check_compile(args: argparse.Namespace) -> None:
    print("\n== 2. compile with every trick: graph breaks and recompiles", flush=True)
    from torch._dynamo.utils import counters  # the public logs print the same, one line per event

    counters.clear()
    torch._logging.set_logs(graph_breaks=True, recompiles=True)
    try:
        cli = build(
            args,
            [str(ROOT / "configs/cifar10_compact.yaml"), *TRICKS],
            "--trainer.precision=bf16-mixed",
            "--model.compile=true",
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=20",
            "--trainer.limit_val_batches=4",
            "--trainer.limit_test_batches=4",
        )
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        print(f"graph breaks: {dict(counters['graph_break']) or 'none'}")
        print(f"dynamo stats: {dict(counters['stats'])}", flush=True)
    except Exception as error:
        print(f"compile: FAILED {type(error).__name__}: {error}", flush=True)
        traceback.print_exc(limit=-4)
    finally:
        torch._logging.set_logs()


class SyncCounter(L.Callback):
    """Turns CUDA's sync debug mode on for training steps [start, start + steps) and records each sync's
    innermost project (lit_vision) or Lightning frame."""

    def __init__(self, start: int = 5, steps: int = 20) -> None:
        self.start, self.stop = start, start + steps
        self.where: collections.Counter[str] = collections.Counter()
        self._showwarning = warnings.showwarning

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        if "synchronizing CUDA operation" not in str(message):
            return self._showwarning(message, category, filename, lineno, file, line)
        frames = [f for f in traceback.extract_stack()[:-1] if "/benchmarks/" not in f.filename]
        ours = [f for f in frames if "lit_vision" in f.filename or "lightning" in f.filename]
        f = (ours or frames)[-1]
        self.where[f"{Path(f.filename).name}:{f.lineno} {f.name}"] += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.start:
            warnings.simplefilter("always")
            warnings.showwarning = self._record
            torch.cuda.set_sync_debug_mode("warn")
        elif trainer.global_step == self.stop:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = self._showwarning


def check_syncs(args: argparse.Namespace) -> None:
    print("\n== 3. host-device syncs over 20 training steps (steps 5-24)", flush=True)
    setups = {
        "default (cifar10_compact)": [str(ROOT / "configs/cifar10_compact.yaml")],
        "speedrun": [
            str(ROOT / "configs/speedrun/cifar10_94.yaml"),
            "--ema.init_args.step_updates_from_epoch=0",
        ],
        "every trick": [str(ROOT / "configs/cifar10_compact.yaml"), *TRICKS],
    }
    for name, setup in setups.items():
        configs = [c for c in setup if not c.startswith("--")]
        flags = [c for c in setup if c.startswith("--")]
        counter = SyncCounter()
        cli = build(
            args, configs, *flags, "--trainer.precision=bf16-mixed", "--trainer.max_steps=26",
            "--trainer.limit_val_batches=0",
        )  # fmt: skip
        cli.trainer.callbacks.append(counter)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        torch.cuda.set_sync_debug_mode("default")
        total = sum(counter.where.values())
        print(f"{name}: {total} syncs in 20 steps ({total / 20:.2f} per step)")
        for where, n in counter.where.most_common():
            print(f"   {n:4d}  {where}")


class OneStepProfile(L.Callback):
    def __init__(self, step: int, trace: Path | None) -> None:
        self.step, self.trace, self.profiler = step, trace, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            self.profiler = torch.profiler.profile(activities=acts)
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.profiler is not None:
            torch.cuda.synchronize()
            self.profiler.__exit__(None, None, None)
            print(self.profiler.key_averages().table(sort_by="cuda_time_total", row_limit=15))
            if self.trace is not None:
                self.profiler.export_chrome_trace(str(self.trace / "train_step_trace.json"))
            self.profiler = None


def check_profile(args: argparse.Namespace) -> None:
    print("\n== 4. profile of one training step (speedrun config, bf16-mixed)", flush=True)
    cli = build(
        args, [str(ROOT / "configs/speedrun/cifar10_94.yaml")], "--trainer.precision=bf16-mixed",
        "--trainer.max_steps=12", "--trainer.limit_val_batches=0",
    )  # fmt: skip
    cli.trainer.callbacks.append(OneStepProfile(10, args.trace))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)


class SyncedTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        self.end = time.perf_counter()


def check_resnet18(args: argparse.Namespace) -> None:
    print("\n== 5. ResNet-18 (resnet18_cifar, batch 512) training images/s", flush=True)
    steps, warmup, batch = 80, 20, 512
    for precision in ("32-true", "bf16-mixed"):
        for compiled in (False, True):
            cli = build(
                args, [str(ROOT / "configs/cifar10_resnet18.yaml")], f"--trainer.precision={precision}",
                f"--model.compile={str(compiled).lower()}", f"--trainer.max_steps={steps}",
                f"--data.batch_size={batch}", "--trainer.limit_val_batches=0",
            )  # fmt: skip
            timer = SyncedTimer(warmup)
            cli.trainer.callbacks.append(timer)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            rate = (steps - warmup) * batch / (timer.end - timer.start)
            print(
                f"{precision:>10s} {'compile' if compiled else 'eager  '}: {rate:9.0f} images/s", flush=True
            )


CHECKS = {
    "precision": check_precisions,
    "compile": check_compile,
    "syncs": check_syncs,
    "profile": check_profile,
    "resnet18": check_resnet18,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated, of {', '.join(CHECKS)}")
    parser.add_argument("--trace", type=Path, help="folder for the profiled step's Chrome trace")
    parser.add_argument("--log-dir", default="/tmp/gpu_check")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA GPU; none is visible.")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, lightning {L.__version__}", flush=True)
    for name in args.only.split(","):
        start = time.perf_counter()
        CHECKS[name](args)
        print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
