"""Resuming into a changed schedule (``model.on_schedule_change``): the schedule's horizon (the optimizer
steps of the run, or its epochs) or the optimizer/scheduler settings differ from the checkpoint's.

A restored optimizer carries the checkpoint's settings and a restored scheduler the old curve: resuming into a
longer run, or with a new learning rate, would silently train on the old ones. ``refuse`` (the default) stops
with the choices; ``extend`` continues on the curve a run of the new length (with the new settings) follows,
at the current step; ``restart`` runs a fresh schedule over the remaining steps. The ``ImageClassifier``
holds one :class:`ScheduleResume` and calls it from ``configure_optimizers`` and ``on_train_start``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from lit_vision.models.training.factory_args import factory_settings
from lit_vision.models.training.schedulers import build_scheduler, extend_kwargs

__all__ = [
    "ScheduleChangeError",
    "ScheduleResume",
    "changed_settings",
    "group_settings",
    "optimizer_settings",
]


class ScheduleChangeError(ValueError):
    """A resume whose schedule horizon or settings differ from the checkpoint's, without a chosen policy."""


def optimizer_settings(optimizer_factory: Any, scheduler_factory: Any) -> dict[str, Any]:
    """The optimizer and scheduler as configured (class and init arguments, ``total_steps`` left out: the
    horizon is compared on its own), JSON-safe: saved in checkpoints so that a resume can tell when the
    user changed them (the restored optimizer state would otherwise carry the checkpoint's values)."""
    return {
        "optimizer": factory_settings(optimizer_factory),
        "scheduler": factory_settings(scheduler_factory, skip=("total_steps",)),
    }


def changed_settings(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``section.name: old -> new`` for every setting of :func:`optimizer_settings` that differs."""
    changes = []
    for section in ("optimizer", "scheduler"):
        old, new = then.get(section) or {}, now.get(section) or {}
        # Classes compare by name: a module path may move between versions (lit_vision's own did) while
        # the optimizer stays the same; two different optimizers of one name in one run are not a use case.
        if str(old.get("class")).rpartition(".")[2] != str(new.get("class")).rpartition(".")[2]:
            changes.append(f"{section}: {old.get('class')} -> {new.get('class')}")
            continue
        old_args, new_args = old.get("args", {}), new.get("args", {})
        for name in sorted(set(old_args) | set(new_args)):
            if old_args.get(name) != new_args.get(name):
                changes.append(f"{section}.{name}: {old_args.get(name)} -> {new_args.get(name)}")
    return changes


def group_settings(optimizer: Any) -> list[dict[str, Any]]:
    """Every param group's settings (lr, momentum, a scheduler's initial_lr...) without its parameters."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def _settings_differ(changed: list[str]) -> str:
    return f"model.optimizer/model.scheduler settings differ from the checkpoint's ({'; '.join(changed)})"


@dataclass(frozen=True)
class _Change:
    """How a resumed run's schedule differs from its checkpoint's: ``name`` of the scheduler, its horizons
    ``old`` and ``total`` (equal when only settings changed) and the ``done`` steps (or epochs), per
    ``interval``; ``changed``: the settings that differ (:func:`changed_settings`)."""

    name: str
    old: int
    total: int
    done: int
    interval: str
    changed: list[str]
    horizon_changed: bool

    @property
    def unit(self) -> str:
        return "optimizer steps" if self.interval == "step" else "epochs"

    @property
    def what(self) -> str:
        """The sentence that opens every message about this change."""
        if not self.horizon_changed:
            return (
                f"The {_settings_differ(self.changed)}, and the restored state of the LR schedule "
                f"({self.name}, stopped after {self.done} {self.unit}) would keep the checkpoint's values."
            )
        what = (
            f"The checkpoint's LR schedule ({self.name}) was built for a run of {self.old} {self.unit} and "
            f"stopped after {self.done}; this run's trainer.max_steps/max_epochs make it {self.total} "
            f"{self.unit}."
        )
        return what + (f" The {_settings_differ(self.changed)}." if self.changed else "")


class ScheduleResume:
    """The resume bookkeeping of one module's LR schedule."""

    def __init__(self) -> None:
        #: the horizon the schedule was built for (None: constant LR or a schedule of any length)
        self.horizon: int | None = None
        #: the checkpoint being resumed, from on_load_checkpoint until training starts
        self.resuming: dict[str, Any] | None = None
        #: the optimizer settings and schedule position to put in place once Lightning has restored
        #: the optimizer and scheduler states
        self.fix: tuple[list[dict[str, Any]], int] | None = None

    def reconcile(
        self,
        optimizer: Any,
        scheduler: Any,
        total: int,
        factory: Any,
        settings: dict[str, Any],
        policy: str,
        interval: str,
    ) -> Any:
        """Resuming: apply ``policy`` (``on_schedule_change``) when the checkpoint's horizon differs from
        ``total`` or ``settings`` (see :func:`optimizer_settings`) differ from the checkpoint's; returns the
        scheduler to use. Without a scheduler (constant LR) changed optimizer settings simply apply: there
        is no schedule to reconcile them with. ``factory`` builds the scheduler; ``interval`` is ``step`` or
        ``epoch``."""
        assert self.resuming is not None
        then = (self.resuming.get("lit_vision") or {}).get("optimizer_settings")
        changed = [] if then is None else changed_settings(then, settings)
        if scheduler is None:
            if changed:
                rank_zero_info(f"The {_settings_differ(changed)}: the new values replace the checkpoint's.")
                self.fix = (group_settings(optimizer), 0)
            return scheduler
        saved_states = self.resuming.get("lr_schedulers") or []
        if not saved_states:
            return scheduler
        saved = saved_states[0]
        done = int(saved.get("last_epoch", 0))
        old = (self.resuming.get("lit_vision") or {}).get("schedule_horizon") or saved.get("total_steps")
        horizon_changed = self.horizon is not None and old is not None and int(old) != total
        if not horizon_changed and not changed:
            return scheduler
        old = int(old) if horizon_changed else total
        change = _Change(type(scheduler).__name__, old, total, done, interval, changed, horizon_changed)
        self._refuse(change, policy)
        if policy == "extend":
            kwargs = extend_kwargs(scheduler, factory, old, total)
            scheduler, position = build_scheduler(factory, optimizer, total, **kwargs), done
        else:
            scheduler, position = build_scheduler(factory, optimizer, max(total - done, 1)), 0
        rank_zero_info(f"{change.what} on_schedule_change={policy}: the schedule is rebuilt.")
        # Lightning restores the optimizer and scheduler states from this dict after this hook: the rebuilt
        # schedule's state replaces the saved one, and on_train_start puts back the new schedule's optimizer
        # settings (the restored optimizer state carries the old ones) at the resume position.
        state = scheduler.state_dict()
        if "last_epoch" in state:
            state["last_epoch"] = position
        saved_states[0] = state
        self.fix = (group_settings(optimizer), position)
        return scheduler

    def _refuse(self, change: _Change, policy: str) -> None:
        """Raise unless ``policy`` can be carried out: ``refuse`` names the choices; a run already past the
        new end, or ``extend`` of a schedule without a horizon, cannot be rebuilt."""
        total, unit = change.total, change.unit
        if self.horizon is None:  # no horizon: a schedule that only a restart can rebuild
            remaining = "a fresh schedule from this point"
        else:
            remaining = f"a fresh schedule over the remaining {max(total - change.done, 0)} {unit}"
        if policy == "refuse":
            extend = (
                f"--model.on_schedule_change extend (keep the warmup, the decay ending at {total}), "
                if self.horizon is not None
                else ""
            )
            raise ScheduleChangeError(
                f"{change.what} Choose what the schedule does: {extend}--model.on_schedule_change restart "
                f"({remaining}, with the new settings), or resume with the run's original "
                f"{'length' if change.horizon_changed else 'settings'}."
            )
        if self.horizon is not None and change.done >= total:
            raise ScheduleChangeError(
                f"{change.what} The run is already past the new end: nothing to {policy}."
            )
        if policy == "extend" and self.horizon is None:
            raise ScheduleChangeError(
                f"{change.what} on_schedule_change=extend stretches a schedule built for a number of steps; "
                f"{change.name} has no such horizon. Use --model.on_schedule_change restart ({remaining})."
            )

    def apply(self, trainer: Any) -> None:
        """At the start of training, once Lightning has restored the optimizer and scheduler: put the new
        settings and the schedule position in place (after a rebuild), and let the checkpoint dict go."""
        self.resuming = None  # restored by now; the checkpoint dict is Lightning's to free
        if self.fix is None:
            return
        hyper, position = self.fix
        self.fix = None
        for group, settings in zip(trainer.optimizers[0].param_groups, hyper, strict=True):
            group.update(settings)
        if position > 0:
            # one step back and one forward: the LR (and momentum) of the resume step on the new curve,
            # set the way the scheduler sets them
            scheduler = trainer.lr_scheduler_configs[0].scheduler
            scheduler.last_epoch = position - 1
            with warnings.catch_warnings():  # torch warns of a step() before any optimizer.step() here
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                scheduler.step()
