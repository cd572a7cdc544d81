from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LRSchedulerCallable

from lit_vision.models import SoftTargetCrossEntropy, WarmupCosineLR
from lit_vision.models.training.schedulers import build_scheduler


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_soft_targets_match_hard_labels(eps: float) -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    loss = SoftTargetCrossEntropy(eps)
    torch.testing.assert_close(loss(logits, F.one_hot(y, 5).float()), loss(logits, y))
    torch.testing.assert_close(loss(logits, y), F.cross_entropy(logits, y, label_smoothing=eps))


def test_soft_target_loss_is_the_lambda_mix_without_smoothing() -> None:
    torch.manual_seed(0)
    logits, a, b, lam = torch.randn(6, 4), torch.randint(0, 4, (6,)), torch.randint(0, 4, (6,)), 0.3
    target = lam * F.one_hot(a, 4) + (1 - lam) * F.one_hot(b, 4)
    expected = lam * F.cross_entropy(logits, a) + (1 - lam) * F.cross_entropy(logits, b)
    torch.testing.assert_close(SoftTargetCrossEntropy(0.0)(logits, target.float()), expected)


def test_smoothing_applied_once_to_soft_targets() -> None:
    logits = torch.randn(3, 4)
    target = F.one_hot(torch.tensor([0, 1, 2]), 4).float()
    smoothed_once = target * 0.8 + 0.2 / 4
    expected = -(smoothed_once * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(SoftTargetCrossEntropy(0.2)(logits, target), expected)


def test_bad_smoothing_and_shapes() -> None:
    with pytest.raises(ValueError):
        SoftTargetCrossEntropy(1.0)
    with pytest.raises(ValueError, match="match logits"):
        SoftTargetCrossEntropy()(torch.randn(2, 3), torch.rand(2, 4))


def _opt() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_warmup_cosine_shape() -> None:
    opt = _opt()
    sched = WarmupCosineLR(opt, total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)  # (0 + 1) / 10
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-6)  # half-way through the decay
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosineLR(_opt())


def test_build_scheduler_fills_total_steps_of_yaml_callables() -> None:
    parser = ArgumentParser()
    parser.add_argument("--sched", type=LRSchedulerCallable)
    cfg = parser.parse_args(
        ["--sched", '{"class_path": "torch.optim.lr_scheduler.OneCycleLR", "init_args": {"max_lr": 0.5}}']
    )
    factory = parser.instantiate(cfg).sched
    sched = build_scheduler(factory, _opt(), total_steps=40)
    assert sched.total_steps == 40
    # Our own class, given directly (not via YAML).
    assert build_scheduler(WarmupCosineLR, _opt(), total_steps=7).total_steps == 7
    # A scheduler without total_steps is called unchanged.
    step_lr = build_scheduler(lambda o: torch.optim.lr_scheduler.StepLR(o, 3), _opt(), total_steps=7)
    assert step_lr.step_size == 3


def onecycle_lrs(factory, total: int) -> list[float]:
    """LR of each of ``total`` optimizer steps of a schedule built by ``build_scheduler``."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    sched = build_scheduler(factory, opt, total)
    lrs = []
    for i in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if i < total - 1:
            sched.step()
    return lrs


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("pct_start", [0.05, 0.25, 0.3, 0.5, 0.9])
def test_onecycle_trains_runs_of_any_length(pct_start: float, three_phase: bool) -> None:
    """A short run (a user's first smoke test) must not end in torch's ZeroDivisionError: pct_start 0.25
    of 4 steps gives a zero-length warm-up. Every length from 1 step, each LR finite and at most max_lr."""
    from functools import partial

    from torch.optim.lr_scheduler import OneCycleLR

    factory = partial(OneCycleLR, max_lr=0.2, pct_start=pct_start, three_phase=three_phase, total_steps=None)
    for total in range(1, 17):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lrs = onecycle_lrs(factory, total)
        assert all(0 < lr <= 0.2 + 1e-9 for lr in lrs), (total, lrs)


def test_onecycle_is_left_alone_when_its_phases_fit_and_clamped_with_a_warning_when_not() -> None:
    from functools import partial

    from torch.optim.lr_scheduler import OneCycleLR

    factory = partial(OneCycleLR, max_lr=0.2, pct_start=0.25, total_steps=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: 0.25 x 8 steps leaves a 1-step warm-up
        reference = partial(OneCycleLR, max_lr=0.2, pct_start=0.25, total_steps=8)
        assert onecycle_lrs(factory, 8) == onecycle_lrs(reference, 8)
    with pytest.warns(UserWarning, match=r"pct_start=0.25 of a 4-step run .* needs trainer.max_steps >= 8"):
        lrs = onecycle_lrs(factory, 4)
    # pct_start 0.5 instead: one warm-up step to max_lr, then the decay
    assert lrs == onecycle_lrs(partial(OneCycleLR, max_lr=0.2, pct_start=0.5, total_steps=4), 4)
    assert lrs[1] == pytest.approx(0.2)
