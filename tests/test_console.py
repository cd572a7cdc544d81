"""What a run prints (lit_vision.console): no warning or notice the user cannot act on, the model summary
without an empty FLOPs column, and decoded images that torch takes without a warning.

pytest's own ``filterwarnings`` (pyproject.toml) hides some of these messages in this process, and torch
warns about non-writable arrays once per process: the end-to-end check runs ``train.py`` in a fresh
interpreter, with Python's default warning filters, as a user does."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, folder_args, run_python
from lightning.pytorch.utilities._pytree import _tree_flatten

from lit_vision.console import ADVERT_LOGGER, ModelSummary, _DropAdverts, quiet_lightning, use_model_summary
from lit_vision.data.sources import decode_image

#: what a plain fit printed before (issue 34), none of which the user can do anything about
NOT_THE_USERS_BUSINESS = (
    "litlogger",  # Lightning's advertisement for its hosted experiment tracker
    "litmodels",  # ... and for its model registry
    "LeafSpec",  # Lightning's own use of a deprecated torch class
    "is not writable",  # torch.from_numpy of the decoder's read-only arrays
    "FLOPs",  # a FLOPs column of zeros and "Total FLOPs: 0": Lightning counts none for this model
    "Skipping setting a default `ModelSummary`",  # Lightning's note when the CLI gives lit_vision's summary
)


def test_a_fit_prints_nothing_the_user_cannot_act_on(tiny_folder: Path, tmp_path: Path) -> None:
    cache = Path(os.environ["LIT_VISION_CACHE"])  # conftest: empty, so this run decodes the images
    assert not any(cache.iterdir())
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    code, printed = run_python(
        ROOT / "train.py",
        "fit",
        f"--config={ROOT / 'configs/cifar10_compact.yaml'}",
        *folder_args(tiny_folder),
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        "--trainer.max_epochs=1",  # one short epoch, validation included, as every fit has
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",  # the model summary stays on: it is checked below
        cwd=tmp_path,
        env=env,
    )
    assert code == 0, printed
    assert any(cache.iterdir()), "the run did not decode the images: the decoder's arrays went unchecked"
    assert "Total params" in printed, f"no model summary printed:\n{printed}"
    for message in NOT_THE_USERS_BUSINESS:
        assert message not in printed, f"{message!r} in the output of a plain fit:\n{printed}"
    # Lightning and Python print a warning as "<file>.py:<line>: <message>"
    warned = [line for line in printed.splitlines() if ".py:" in line and ": " in line]
    assert not warned, "\n".join(warned)


def test_decoded_images_are_writable(tiny_folder: Path) -> None:
    """torch.from_numpy of a read-only array warns (once per process, so only a fresh process shows it):
    every decoded image is an array of its own."""
    image = next((tiny_folder / "train").glob("*/*.png"))
    for size in (None, 24):
        array = decode_image(image, size)
        assert array.flags.writeable and array.dtype.name == "uint8" and array.shape[-1] == 3


@pytest.fixture
def quiet() -> Iterator[list[warnings.WarningMessage]]:
    """quiet_lightning() for one test: the warning filters and the advert filter are restored after it."""
    logger = logging.getLogger(ADVERT_LOGGER)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # above pytest's own filters (pyproject.toml ignores LeafSpec)
        yield caught
    for f in [f for f in logger.filters if isinstance(f, _DropAdverts)]:
        logger.removeFilter(f)


def test_leafspec_warning_is_dropped_only_where_lightning_raises_it(quiet) -> None:
    _tree_flatten(1)  # Lightning's CombinedLoader does this with every fit
    assert any("LeafSpec" in str(w.message) for w in quiet), "Lightning no longer warns: drop the filter"
    quiet.clear()
    quiet_lightning()
    quiet_lightning()  # idempotent
    _tree_flatten(1)
    assert not quiet, [str(w.message) for w in quiet]
    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
    assert len(quiet) == 1, "the same message from any other module must still show"


def test_adverts_are_dropped_and_other_rank_zero_messages_kept(quiet, caplog) -> None:
    from lightning.pytorch import Trainer

    quiet_lightning()
    quiet_lightning()
    assert sum(isinstance(f, _DropAdverts) for f in logging.getLogger(ADVERT_LOGGER).filters) == 1
    with caplog.at_level(logging.INFO, logger="lightning"):
        Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Tip" in m], messages
    assert any("GPU available" in m for m in messages), messages  # Lightning's other messages still show


def test_use_model_summary_respects_the_trainer_settings() -> None:
    from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary

    kwargs: dict = {"max_epochs": 1, "callbacks": None}
    extra: list = []
    use_model_summary(kwargs, extra)
    assert [type(c) for c in extra] == [ModelSummary] and kwargs["enable_model_summary"] is False
    for given in (
        {"enable_model_summary": False},
        {"barebones": True},
        {"callbacks": LightningModelSummary(max_depth=2)},
        {"callbacks": [LightningModelSummary(max_depth=2)]},
    ):
        extra = []
        use_model_summary(dict(given), extra)
        assert extra == [], given


def test_model_summary_table_without_flops(capsys) -> None:
    data = [
        (" ", ["0", "1"]),
        ("Name", ["backbone", "criterion"]),
        ("Type", ["CompactCNN", "CrossEntropy"]),
        ("Params", ["183 K", "0"]),
        ("Mode", ["train", "train"]),
        ("FLOPs", ["0", "0"]),
    ]
    ModelSummary.summarize(data, 183_000, 183_000, 0.7, {"train": 2, "eval": 0}, total_flops=0)
    printed = capsys.readouterr().out
    assert "FLOPs" not in printed
    for text in ("backbone", "CompactCNN", "183 K", "Total params", "Modules in eval mode"):
        assert text in printed, printed
    ModelSummary.summarize(data, 183_000, 183_000, 0.7, {"train": 2, "eval": 0}, total_flops=10**6)
    assert "Total FLOPs: 1.0 M" in capsys.readouterr().out  # counted: Lightning's summary as it is
