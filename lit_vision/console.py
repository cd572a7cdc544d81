"""What a run prints besides its own messages: Lightning's notices a user of lit_vision cannot act on are
dropped, each by its exact text and origin, and the model summary leaves out the FLOPs it never counted.

``quiet_lightning()`` is called once per process before a Trainer exists (``lit_vision.cli.main``);
``use_model_summary()`` where the CLI builds its Trainer.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import MutableMapping, MutableSequence
from typing import Any

from lightning.pytorch.callbacks import Callback, RichModelSummary
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

__all__ = ["ModelSummary", "quiet_lightning", "use_model_summary"]

#: Lightning's advertisements for its hosted services, logged by rank_zero_info on every Trainer start
ADVERTS = (
    "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",
    "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]",
)
#: where rank_zero_info logs them
ADVERT_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(ADVERTS)


def quiet_lightning() -> None:
    """Drop, for this process, the Lightning messages a run prints that no setting of lit_vision can change.
    Idempotent: calling it again adds nothing."""
    # Lightning 2.6's CombinedLoader builds torch's deprecated LeafSpec (torch.utils._pytree) on every fit:
    # the fix is Lightning's to make. Only this message, only when raised from that module.
    warnings.filterwarnings(
        "ignore",
        message=re.escape("`isinstance(treespec, LeafSpec)` is deprecated"),
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree\Z",
    )
    # A filter on the logger that emits them: the rest of Lightning's rank-zero messages stay.
    logger = logging.getLogger(ADVERT_LOGGER)
    if not any(isinstance(f, _DropAdverts) for f in logger.filters):
        logger.addFilter(_DropAdverts())


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary, without the FLOPs column and total when no FLOPs were counted.

    Lightning counts FLOPs only in a forward pass of the module's ``example_input_array``; lit_vision's
    classifier sets none (its batches become images in the datamodule's ``on_after_batch_transfer``, which an
    example input would also go through), so Lightning would print a FLOPs column of zeros and
    ``Total FLOPs: 0``. ``python -m lit_vision.models list`` gives each backbone's MACs per image."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        from rich import get_console
        from rich.table import Table

        # Lightning's table and totals (RichModelSummary.summarize), less the FLOPs column and line
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            if name == " ":
                table.add_column(name, style="dim")
            elif name == "Name":
                table.add_column(name, justify="left", no_wrap=True)
            elif name in ("In sizes", "Out sizes"):
                table.add_column(name, justify="right", style="white")
            else:
                table.add_column(name, justify="right" if name.startswith("Params") else "left")
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        console = get_console()
        console.print(table)

        grid = Table.grid(expand=True)
        grid.add_column()
        grid.add_column()
        counts = (trainable_parameters, total_parameters - trainable_parameters, total_parameters)
        labels = ("Trainable params", "Non-trainable params", "Total params")
        for label, count in zip(labels, counts, strict=True):
            grid.add_row(f"[bold]{label}[/]: {get_human_readable_count(int(count)):<10}")
        grid.add_row(
            f"[bold]Total estimated model params size (MB)[/]: {get_formatted_model_size(model_size):<10}"
        )
        grid.add_row(f"[bold]Modules in train mode[/]: {total_training_modes['train']}")
        grid.add_row(f"[bold]Modules in eval mode[/]: {total_training_modes['eval']}")
        console.print(grid)


def use_model_summary(trainer_kwargs: MutableMapping[str, Any], callbacks: MutableSequence[Callback]) -> None:
    """Where Lightning would add its default model summary, add lit_vision's to ``callbacks`` instead.

    ``trainer_kwargs`` are the Trainer's keyword arguments: a run with ``enable_model_summary: false`` or
    ``barebones: true`` gets none, one whose ``callbacks`` already hold a summary keeps it. Lightning's own
    default is then turned off in ``trainer_kwargs``: the Trainer leaves it out without logging that a
    summary callback was already given."""
    if trainer_kwargs.get("enable_model_summary") is False or trainer_kwargs.get("barebones"):
        return
    given = trainer_kwargs.get("callbacks")
    given = [] if given is None else given if isinstance(given, list | tuple) else [given]
    if any(isinstance(c, LightningModelSummary) for c in [*given, *callbacks]):
        return
    callbacks.append(ModelSummary())
    trainer_kwargs["enable_model_summary"] = False
