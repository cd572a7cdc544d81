"""The streaming back-end against the memory back-end: training speed, and peak memory on a large folder.

    python benchmarks/streaming.py speed [--data-dir ../shared/data/cifar10] [--rounds 2]
    python benchmarks/streaming.py memory [--images 30000 --size 128 --steps 30]

``speed``: converts ``--data-dir`` to shards once (``python -m lit_vision.data.shards``, kept in
``--work-dir``), then alternates one training epoch of ``train.py fit`` with each back-end (same compact CNN,
batch, seed and split; validation off), and prints ``perf/train_images_per_s`` of each round. Each back-end
runs with its default workers (memory: none, batches are tensor slices; streaming: min(4, CPUs), decoding).

``memory``: writes a generated ImageFolder of ``--images`` JPEGs at ``--size`` px (once), converts it, then
runs ``train.py fit`` for ``--steps`` steps with each back-end in a child process and samples the memory of
the child and its loader workers together every 0.2 s (PSS: shared pages split among their sharers): the
memory back-end holds every decoded image (``images x 3 x size^2`` bytes), the streaming back-end a few
shards per worker. The memory back-end runs twice from an empty decode cache: its first run decodes and
writes the cache, later runs load it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import DEFAULT_DATA

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def fit_args(
    data_dir: Path, backend: str, work: Path, args: argparse.Namespace, cache: Path | None = None
) -> list[str]:
    return [
        "fit",
        "--config=configs/cifar10_compact.yaml",
        "--data.dataset=imagefolder",
        f"--data.data_dir={data_dir}",
        f"--data.backend={backend}",
        f"--data.batch_size={args.batch_size}",
        f"--data.val_size={args.val_size}",
        f"--data.cache_dir={cache or work / 'cache'}",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.logger.init_args.save_dir={work / 'runs'}",
        *QUIET,
    ]


def shards_of(data_dir: Path, work: Path, val_size: int) -> Path:
    """``data_dir`` converted (a no-op when the shards are up to date)."""
    out = work / "shards" / data_dir.name
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_vision.data.shards",
            str(data_dir),
            str(out),
            "--val-size",
            str(val_size),
        ],
        cwd=ROOT,
        check=True,
    )
    return out


def speed(args: argparse.Namespace) -> None:
    from lit_vision.cli import main

    work = args.work_dir
    sources = {"memory": args.data_dir, "streaming": shards_of(args.data_dir, work, args.val_size)}
    rates: dict[str, list[float]] = {name: [] for name in sources}
    for r in range(args.rounds):
        for backend, data_dir in sources.items():
            cli = main([*fit_args(data_dir, backend, work, args), "--trainer.max_epochs=1"])
            rate = float(cli.trainer.callback_metrics["perf/train_images_per_s"])
            workers = cli.datamodule.num_workers
            rates[backend].append(rate)
            print(f"round {r}: {backend} ({workers} workers) {rate:,.0f} images/s", flush=True)
    print("\n| back-end | train images/s (median of rounds) | rounds |")
    print("| --- | ---: | --- |")
    for backend, values in rates.items():
        print(f"| {backend} | {statistics.median(values):,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")


def tree_pss(pid: int) -> int:
    """Proportional resident bytes (PSS) of ``pid`` and all its descendants (Linux /proc). Loader workers
    are forked: their RSS would count the pages they share with the parent once per process; PSS splits each
    shared page among its sharers, so the sum is the memory the run really holds."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue  # exited meanwhile
    return total


def peak_memory(cmd: list[str]) -> tuple[int, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(proc.pid))
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr.read()[-3000:]}")
    return peak, time.perf_counter() - start


def memory(args: argparse.Namespace) -> None:
    from lit_vision.data.synthetic import make_imagefolder

    work = args.work_dir
    folder = work / f"folder-{args.images}x{args.size}"
    if not (folder / "train").is_dir():
        per_class = args.images // 10
        print(f"writing {10 * per_class} JPEGs of {args.size}x{args.size} into {folder}", flush=True)
        make_imagefolder(folder, 10, n_train=per_class, n_test=None, size=args.size, ext=".jpg")
    shards = shards_of(folder, work, args.val_size)
    decoded = args.images * 3 * args.size**2
    print(f"{args.images} images of {args.size}x{args.size}: {decoded / 2**30:.2f} GiB decoded")
    # the memory back-end's first run decodes into its cache, later runs load the cache: both, from empty
    cache = work / "cache-memory-bench"
    shutil.rmtree(cache, ignore_errors=True)
    runs = [
        ("streaming", "streaming", shards),
        ("memory, first run (decodes, writes its cache)", "memory", folder),
        ("memory, later runs (load the cache)", "memory", folder),
    ]
    print("\n| back-end | peak memory (PSS), process + workers | wall time |")
    print("| --- | ---: | ---: |")
    for name, backend, data_dir in runs:
        cmd = [
            sys.executable,
            "train.py",
            *fit_args(data_dir, backend, work, args, cache),
            "--trainer.max_epochs=1",
            f"--trainer.limit_train_batches={args.steps}",
        ]
        peak, seconds = peak_memory(cmd)
        print(f"| {name} | {peak / 2**30:.2f} GiB | {seconds:.0f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["speed", "memory"])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="speed: the dataset")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/lit_vision_streaming"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=5000, help="held-out images (the shards' split)")
    parser.add_argument("--rounds", type=int, default=2, help="speed: epochs per back-end, alternating")
    parser.add_argument("--images", type=int, default=30_000, help="memory: generated images")
    parser.add_argument("--size", type=int, default=128, help="memory: their side in pixels")
    parser.add_argument("--steps", type=int, default=30, help="memory: training steps per back-end")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    if args.what == "speed":
        speed(args)
    else:
        memory(args)


if __name__ == "__main__":
    main()
