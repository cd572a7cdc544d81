"""GPU: the speedrun recipe through ``train.py fit`` vs the ``airbench`` package's own ``train94``.

Both train on the same 45,000 images and are scored on the same 5,000 held out of the CIFAR-10 training
JPEGs (``data.seed`` 0's split, what ``configs/speedrun/cifar10_94.yaml`` validates on): the split is written
in airbench's own file format (``cifar10/train.pt``, ``cifar10/test.pt`` in ``--workdir``), so its
``train94()`` runs unmodified. One process, one GPU; each side gets an untimed warm-up run first (cuDNN
autotuning, allocator growth, compilation), then one timed run per seed, alternating sides.

Timed: airbench's ``train94(verbose=False)`` call (its data loading to the GPU, whitening and 9.9 epochs);
our ``trainer.fit`` (whitening, 10 epochs, validation each epoch and checkpoint writes included: the run as
a user gets it), each between two ``torch.cuda.synchronize()``. Accuracy: airbench's ``evaluate`` with
``tta_level`` 0 and 2; ours: ``val/acc`` of the last epoch and ``trainer.test`` with the config's TTA.

    python benchmarks/speedrun_gpu.py --data-dir DIR --seeds 3 --variants bf16-resident --json runs/sr.json
    python benchmarks/speedrun_gpu.py --data-dir DIR --seeds 2 --variants bf16,fp32-resident
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import torch
from common import DEFAULT_DATA

from lit_vision.cli import main as cli_main
from lit_vision.data.sources import default_cache_dir, load_imagefolder_split
from lit_vision.data.splits import seeded_split

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "speedrun" / "cifar10_94.yaml"

#: our side's variants: the flags each adds to the config
BF16, RESIDENT, COMPILE = (
    "--trainer.precision=bf16-mixed",
    "--data.device_resident=true",
    "--model.compile=true",
)
VARIANTS: dict[str, list[str]] = {
    "bf16": [BF16],
    "bf16-resident": [BF16, RESIDENT],
    "bf16-resident-compile": [BF16, RESIDENT, COMPILE],
    "bf16-compile": [BF16, COMPILE],
    "bf16-true-resident": ["--trainer.precision=bf16-true", RESIDENT],
    "fp16-resident": ["--trainer.precision=16-mixed", RESIDENT],
    "fp32-resident": ["--trainer.precision=32-true", RESIDENT],  # TF32 (the CLI sets matmul precision high)
    "bf16-resident-nocl": [BF16, RESIDENT, "--data.channels_last=false"],  # linked to model.channels_last
}


def write_airbench_split(data_dir: Path, workdir: Path) -> None:
    """The seeded 45,000/5,000 split of the JPEGs as airbench's ``cifar10/{train,test}.pt`` (NHWC uint8)."""
    full = load_imagefolder_split(data_dir / "train", default_cache_dir())
    train_idx, val_idx = seeded_split(len(full), 5000, 0, where=str(data_dir))
    out = workdir / "cifar10"
    out.mkdir(parents=True, exist_ok=True)
    for name, idx in (("train", train_idx), ("test", val_idx)):
        images = full.images[idx].permute(0, 2, 3, 1).contiguous()  # (N, 32, 32, 3), as torchvision's
        torch.save(
            {"images": images, "labels": full.targets[idx], "classes": full.classes}, out / f"{name}.pt"
        )


def airbench_run(workdir: Path, seed: int) -> dict[str, float]:
    import airbench  # the reference implementation (pip install airbench; CUDA only)

    here = os.getcwd()
    os.chdir(workdir)  # airbench reads ./cifar10/{train,test}.pt
    try:
        torch.manual_seed(seed)
        torch.cuda.synchronize()
        start = time.perf_counter()
        model = airbench.train94(verbose=False)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        acc = airbench.evaluate(model, test, tta_level=0)
        acc_tta = airbench.evaluate(model, test, tta_level=2)
    finally:
        os.chdir(here)
    return {"seconds": seconds, "acc": acc, "acc_tta": acc_tta}


def ours_run(
    args: argparse.Namespace, variant: str, seed: int, epochs: int | None = None
) -> dict[str, float]:
    cli = cli_main(
        [
            "--config", str(CONFIG),
            f"--data.data_dir={args.data_dir}",
            f"--seed_everything={seed}",
            "--trainer.accelerator=gpu",
            "--trainer.devices=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={args.log_dir}",
            *([f"--trainer.max_epochs={epochs}"] if epochs else []),
            *VARIANTS[variant],
        ],
        run=False,
    )  # fmt: skip
    torch.cuda.synchronize()
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    val_acc = float(cli.trainer.callback_metrics["val/acc"])
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return {"seconds": seconds, "acc": val_acc, "acc_tta": float(tested[0]["test/acc"]), "peak_gb": peak}


def summary(rows: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in rows]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    scale = 100 if key.startswith("acc") else 1
    return f"{scale * statistics.mean(values):.2f} ± {scale * spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3, help="timed runs per side and variant")
    parser.add_argument("--variants", default="bf16", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--no-airbench", action="store_true", help="our side only")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/speedrun_gpu"))
    parser.add_argument("--log-dir", default="/tmp/speedrun_gpu/runs")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("speedrun_gpu.py measures on a CUDA GPU; none is visible.")
    warnings.filterwarnings("ignore")
    variants = args.variants.split(",")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, variants {variants}", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    if not args.no_airbench:
        write_airbench_split(args.data_dir, args.workdir)
        airbench_run(args.workdir, seed=100)  # warm-up, untimed
        results["airbench.train94"] = []
    for variant in variants:
        ours_run(args, variant, seed=100, epochs=1)  # warm-up (and compilation), untimed
        results[f"train.py {variant}"] = []
    for seed in range(args.seeds):
        for name, rows in results.items():
            row = (
                airbench_run(args.workdir, seed)
                if name.startswith("airbench")
                else ours_run(args, name.split()[1], seed)
            )
            rows.append(row)
            print(
                f"{name:24s} seed {seed}: {json.dumps({k: round(v, 4) for k, v in row.items()})}", flush=True
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "runs": results}, indent=1))
    base = (
        statistics.mean(r["seconds"] for r in results.get("airbench.train94", []))
        if not args.no_airbench
        else None
    )
    print(f"\n{'run':24s} {'seconds':>14s} {'val acc %':>14s} {'val acc TTA %':>14s} {'x airbench':>10s}")
    for name, rows in results.items():
        ratio = statistics.mean(r["seconds"] for r in rows) / base if base else float("nan")
        print(
            f"{name:24s} {summary(rows, 'seconds'):>14s} {summary(rows, 'acc'):>14s} "
            f"{summary(rows, 'acc_tta'):>14s} {ratio:>10.2f}"
        )


if __name__ == "__main__":
    main()
