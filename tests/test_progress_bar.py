"""The progress bars that show the step loss with one host read per logging step
(``lit_vision.callbacks.progress_bar``), and the CLI installing one where Lightning would add its own."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import TinyCli
from lightning.pytorch.callbacks import TQDMProgressBar as LightningTQDMProgressBar

from lit_vision.callbacks import RichProgressBar, TQDMProgressBar
from lit_vision.callbacks.progress_bar import STEP_LOSS, add_default_progress_bar


class CountedLoss:
    """A stand-in for the module's loss tensor that counts its reads on the host."""

    def __init__(self, value: float) -> None:
        self.value, self.reads = value, 0

    def __float__(self) -> float:
        self.reads += 1
        return self.value


@pytest.mark.parametrize("bar_class", [RichProgressBar, TQDMProgressBar])
def test_the_bar_reads_each_logged_loss_once(bar_class: type, run_cli: TinyCli) -> None:
    cli = run_cli.build("--trainer.max_steps=1")
    bar = bar_class()
    module = cli.model
    assert STEP_LOSS not in bar.get_metrics(cli.trainer, module)  # nothing logged yet: nothing shown
    first = module.progress_bar_loss = CountedLoss(0.5)
    for _ in range(5):  # the bar refreshes many times between logging steps
        assert bar.get_metrics(cli.trainer, module)[STEP_LOSS] == 0.5
    assert first.reads == 1
    second = module.progress_bar_loss = CountedLoss(0.25)  # the next logging step
    assert bar.get_metrics(cli.trainer, module)[STEP_LOSS] == 0.25
    assert bar.get_metrics(cli.trainer, module)[STEP_LOSS] == 0.25
    assert (first.reads, second.reads) == (1, 1)


def test_training_hands_the_bar_the_logged_loss(run_cli: TinyCli) -> None:
    """The module sets ``progress_bar_loss`` on logging steps only, to the loss it logged (detached)."""
    cli = run_cli.build("--trainer.max_steps=4", "--trainer.log_every_n_steps=2")
    seen: list[torch.Tensor | None] = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append(pl_module.progress_bar_loss)

    cli.trainer.callbacks.append(Watch())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert seen[0] is None  # step 0 writes no logs
    assert seen[1] is not None and seen[2] is seen[1] and seen[3] is not seen[1]  # replaced at steps 1, 3
    assert not seen[3].requires_grad and seen[3].ndim == 0


@pytest.mark.parametrize(
    ("kwargs", "given", "expected"),
    [
        ({}, [], RichProgressBar),
        ({"enable_progress_bar": True}, [], RichProgressBar),
        ({"enable_progress_bar": False}, [], None),
        ({"barebones": True}, [], None),
        ({"callbacks": [LightningTQDMProgressBar()]}, [], None),  # a config's own bar is kept
        ({"callbacks": LightningTQDMProgressBar()}, [], None),
        ({}, [TQDMProgressBar()], None),
    ],
)
def test_add_default_progress_bar(kwargs: dict, given: list, expected: type | None) -> None:
    callbacks = list(given)
    add_default_progress_bar(kwargs, callbacks)
    added = callbacks[len(given) :]
    assert [type(c) for c in added] == ([expected] if expected else [])


def test_the_cli_installs_the_bar_where_lightning_would(run_cli: TinyCli) -> None:
    def bars(*flags: str) -> list[str]:
        trainer = run_cli.build(*flags).trainer
        return [
            type(c).__module__ + "." + type(c).__name__
            for c in trainer.callbacks
            if "ProgressBar" in type(c).__name__
        ]

    assert bars("--trainer.enable_progress_bar=true") == ["lit_vision.callbacks.progress_bar.RichProgressBar"]
    assert bars("--trainer.enable_progress_bar=false") == []
    assert bars(
        "--trainer.enable_progress_bar=true",
        "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar",
    ) == ["lightning.pytorch.callbacks.progress.tqdm_progress.TQDMProgressBar"]
