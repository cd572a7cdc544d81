"""Cost of each training trick: step time with the callback on vs off, and TTA vs one forward pass.

Same backbone, batch size, data and optimizer as ``fit_overhead.py``; runs alternate (off, EMA, FGSM,
mixing, off, ...) in one process so drifts in machine load hit all alike. TTA is timed on the inference
path: ``TestTimeAugmentation.logits`` (6 views) against one ``model(x)`` on the same eval batch.

    python benchmarks/callback_overhead.py               # real CIFAR-10 from ../shared
    python benchmarks/callback_overhead.py --synthetic   # random images, no dataset needed
    python benchmarks/callback_overhead.py --device cuda # on the GPU (images resident there)

Targets on CPU with the compact CNN: EMA <= 1.05x, FGSM (adv_every=1, replace) <= 2.2x, TTA (6 views)
<= 6.5x one forward.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import lightning as L
import torch
from common import StepTimer, add_data_arguments, load_data, synchronize, timed_trainer
from fit_overhead import make_model

from lit_vision.callbacks import EMA, FGSM, MixUpCutMix, TestTimeAugmentation
from lit_vision.data import ImageDataModule

VARIANTS: dict[str, Callable[[], list[L.Callback]]] = {
    "off": list,
    "ema": lambda: [EMA(decay=0.999)],
    "fgsm": lambda: [FGSM(eps=8 / 255, adv_every=1, mode="replace")],
    "mixing": lambda: [MixUpCutMix()],
}


def seconds_per_step(dm: ImageDataModule, args: argparse.Namespace, callbacks: list[L.Callback]) -> float:
    timer = StepTimer(args.warmup, args.device)
    trainer = timed_trainer(args, [timer, *callbacks])
    trainer.fit(make_model(args), datamodule=dm)
    return (timer.end - timer.start) / (args.steps - args.warmup)


def tta_ratio(dm: ImageDataModule, args: argparse.Namespace) -> tuple[float, float, float]:
    """One forward and 6-view TTA on a batch of ``--tta-batch`` eval images, alternated 8 times: median
    seconds of each and the median of the paired ratios (robust to load drifts, like the step ratios)."""
    model = make_model(args).to(args.device)
    model.configure_model()
    model.eval()
    val = dm.split("val")
    images = val.images[val.indices[: args.tta_batch]].to(args.device)
    x = dm.batch_transform(images, train=False)
    tta = TestTimeAugmentation(hflip=True, translate=2)
    assert len(tta.views) == 6
    times: dict[str, list[float]] = {"forward": [], "tta": []}
    with torch.inference_mode():
        model(x), tta.logits(model, x)  # warm-up
        for _ in range(8):
            for name, fn in (("forward", lambda: model(x)), ("tta", lambda: tta.logits(model, x))):
                synchronize(args.device)
                start = time.perf_counter()
                fn()
                synchronize(args.device)
                times[name].append(time.perf_counter() - start)
    ratios = [t / f for t, f in zip(times["tta"], times["forward"], strict=True)]
    return statistics.median(times["forward"]), statistics.median(times["tta"]), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_arguments(parser)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps at the start of each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tta-batch", type=int, default=512)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    dm = load_data(args)
    print(f"{args.steps - args.warmup} timed steps x {args.rounds} rounds")

    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, callbacks in VARIANTS.items():
            times[name].append(seconds_per_step(dm, args, callbacks()))
        print(f"round {r}: " + "  ".join(f"{n} {1000 * t[-1]:.1f} ms/step" for n, t in times.items()))
    off = statistics.median(times["off"])
    for name in ("ema", "fgsm", "mixing"):
        # ratio per round (against that round's "off" run), then the median: robust to load drifts
        ratios = [t / o for t, o in zip(times[name], times["off"], strict=True)]
        print(
            f"{name:>6}: {1000 * statistics.median(times[name]):.1f} ms/step vs off {1000 * off:.1f} -> "
            f"median ratio {statistics.median(ratios):.3f}x"
        )
    fwd, tta, ratio = tta_ratio(dm, args)
    print(
        f"   tta: 6 views {1000 * tta:.1f} ms vs one forward {1000 * fwd:.1f} ms on {args.tta_batch} images "
        f"-> median paired ratio {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
