"""Learning-rate schedules stepped once per optimizer step.

The CLI passes ``total_steps`` (``trainer.estimated_stepping_batches``) to any scheduler whose signature has
a ``total_steps`` parameter the config left unset, so ``torch.optim.lr_scheduler.OneCycleLR`` and
:class:`WarmupCosineLR` need no hand-computed step counts in YAML.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from lit_vision.models.training.factory_args import bound_or_default, factory_target, left_unset

__all__ = ["TriangleLR", "WarmupCosineLR", "build_scheduler", "extend_kwargs", "fills_total_steps"]


class WarmupCosineLR(LambdaLR):
    """Linear warmup from ~0 to the base LR, then cosine decay to ``min_lr_ratio`` x base LR.

    Args:
        optimizer: wrapped optimizer.
        total_steps: optimizer steps of the whole run (filled in by the module when left unset).
        warmup_steps: warmup length in optimizer steps, or as a fraction of ``total_steps`` if < 1.
        min_lr_ratio: final LR as a fraction of the base LR.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int | float = 0.05,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None or total_steps < 1:
            raise ValueError(f"WarmupCosineLR needs total_steps >= 1, got {total_steps}")
        warmup = round(warmup_steps * total_steps) if warmup_steps < 1 else int(warmup_steps)
        self.total_steps, self.warmup_steps, self.min_lr_ratio = total_steps, warmup, min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor, last_epoch=last_epoch)


class TriangleLR(LambdaLR):
    """Piecewise-linear LR factor: ``start`` at step 0, 1 at ``peak_at`` of the run, ``end`` at its last step.

    airbench94's schedule (Jordan 2024, arXiv:2404.00498: ``start=0.2, peak_at=0.23, end=0.07``): a short
    linear warmup, then a linear decay that stops above zero.

    Args:
        optimizer: wrapped optimizer.
        total_steps: optimizer steps of the whole run (filled in by the module when left unset).
        start: LR factor at the first step.
        peak_at: where the factor reaches 1, as a fraction of ``total_steps``.
        end: LR factor after the last step.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        start: float = 0.2,
        peak_at: float = 0.23,
        end: float = 0.07,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None or total_steps < 1:
            raise ValueError(f"TriangleLR needs total_steps >= 1, got {total_steps}")
        if not 0.0 <= peak_at <= 1.0:
            raise ValueError(f"peak_at must be in [0, 1], got {peak_at}")
        peak = int(peak_at * total_steps)  # the step where the factor is 1 (airbench: int(), not round())
        self.total_steps, self.peak_step = total_steps, peak

        def factor(step: int) -> float:
            if step < peak:
                return start + (1.0 - start) * step / peak
            return 1.0 + (end - 1.0) * min(1.0, (step - peak) / max(1, total_steps - peak))

        super().__init__(optimizer, factor, last_epoch=last_epoch)


def fills_total_steps(scheduler: Callable[..., LRScheduler]) -> bool:
    """Whether ``build_scheduler`` supplies ``total_steps``: the schedule's shape then depends on the run's
    length (its horizon), and resuming into a run of another length changes it."""
    return left_unset(scheduler, "total_steps")


def build_scheduler(
    scheduler: Callable[..., LRScheduler], optimizer: Optimizer, total_steps: int, **kwargs: Any
) -> LRScheduler:
    """Call a scheduler factory, supplying ``total_steps`` when it takes one the config left unset;
    ``kwargs`` replace the factory's own arguments (see :func:`extend_kwargs`)."""
    if fills_total_steps(scheduler):
        kwargs["total_steps"] = total_steps
    target = factory_target(scheduler)
    if isinstance(target, type) and issubclass(target, OneCycleLR):
        kwargs.update(_onecycle_phases_of_a_step(scheduler, kwargs))
    return scheduler(optimizer, **kwargs)


def _onecycle_phases_of_a_step(factory: Callable[..., LRScheduler], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A ``pct_start`` whose OneCycleLR phases each last at least one step, when the configured one does not.

    torch interpolates each phase over ``(end - start)`` steps, with the warm-up ending at step
    ``pct_start * total_steps - 1``: a phase of zero length (``pct_start`` 0.25 of a 4-step run) divides by
    zero at its first step. Short runs (a user's smoke test, ``--trainer.max_steps 4``) get the nearest
    ``pct_start`` whose phases last >= 1 step, with a warning; runs too short for that skip the warm-up.
    """
    total = bound_or_default(factory, "total_steps", kwargs)
    if total is None:  # epochs x steps_per_epoch: torch's own arithmetic, left alone
        return {}
    total = int(total)
    pct = float(bound_or_default(factory, "pct_start", kwargs))
    three_phase = bool(bound_or_default(factory, "three_phase", kwargs))
    # phase boundaries (torch): warm-up ends at pct*total - 1, the second phase of three at 2*pct*total - 2,
    # the last at total - 1; each must be >= 1 step long. Within [low, high] every phase is.
    low, high = 2.0 / total, (total / 2.0 if three_phase else total - 1.0) / total
    if low <= pct <= high or (low > high and pct * total < 1):
        return {}
    # Too short for every phase to last a step: put the warm-up before step 0 (boundaries < 0, as any
    # pct_start below 1 / total does), so the whole run is the final decay.
    fixed = min(max(pct, low), high) if low <= high else 0.5 / total
    warmup = max(int(fixed * total) - 1, 0)
    if 0 < pct < 1 and not (three_phase and pct > 0.5):
        # the shortest run whose phases all last a step at this pct_start
        needed = max(math.ceil(2 / pct), 4 if three_phase else math.ceil(1 / (1 - pct)))
        keep = f"keeping pct_start={pct:g} needs trainer.max_steps >= {needed}"
    else:
        keep = f"pct_start={pct:g} fits no run length{' of three phases' if three_phase else ''}"
    rank_zero_warn(
        f"OneCycleLR: pct_start={pct:g} of a {total}-step run (trainer.max_steps / max_epochs) leaves a "
        "phase shorter than one optimizer step (torch divides by a phase's length: zero fails); using "
        f"pct_start={fixed:g} instead (a warm-up of {warmup} of the {total} steps): {keep}."
    )
    return {"pct_start": fixed}


def extend_kwargs(
    scheduler: LRScheduler, factory: Callable[..., LRScheduler], old_total: int, new_total: int
) -> dict[str, Any]:
    """Arguments that rebuild ``scheduler`` (built by ``factory`` for ``old_total`` steps) for ``new_total``
    steps with the same warmup length in steps; its decay then ends at ``new_total``.

    OneCycleLR: ``pct_start`` scaled by ``old_total / new_total``. TriangleLR: ``peak_at`` moved so the peak
    stays at its step. WarmupCosineLR: ``warmup_steps`` as the absolute step count it had. Other schedulers
    with a ``total_steps`` argument: only ``total_steps``.
    """
    if isinstance(scheduler, OneCycleLR):
        bound = getattr(factory, "keywords", None) or {}
        pct_start = bound.get("pct_start", inspect.signature(OneCycleLR).parameters["pct_start"].default)
        return {"pct_start": min(1.0, pct_start * old_total / new_total)}
    if isinstance(scheduler, TriangleLR):
        return {"peak_at": (scheduler.peak_step + 0.5) / new_total}  # int(peak_at * new_total) == peak_step
    if isinstance(scheduler, WarmupCosineLR):
        fraction = _warmup_fraction(factory)
        return {"warmup_steps": round(fraction * old_total) if fraction > 0 else scheduler.warmup_steps}
    return {}


def _warmup_fraction(factory: Callable[..., LRScheduler]) -> float:
    """WarmupCosineLR's warmup as a fraction of the run (0 when it was given in absolute steps)."""
    bound = getattr(factory, "keywords", None) or {}
    warmup = bound.get("warmup_steps", inspect.signature(WarmupCosineLR).parameters["warmup_steps"].default)
    return float(warmup) if warmup < 1 else 0.0
