"""Recording what would make the host wait for a CUDA device during training steps, checked on the CPU."""

from __future__ import annotations

import traceback
from pathlib import Path

import lightning as L
import torch
from torch.overrides import TorchFunctionMode

_THIS_FILE = Path(__file__).name


class HostSyncRecorder(L.Callback):
    """Records every operation that would make the host wait for a CUDA device, over training steps
    [start, start + steps): from the first callback's ``on_train_batch_start`` of step ``start`` to that
    of step ``start + steps``, so the loader, the batch transfer hooks, ``training_step``, backward, the
    optimizer step, every callback's batch hooks and Lightning's logging in between are all covered.

    On the CPU nothing waits, so the sync points are recognised by what they are: reading a tensor's value on
    the host (``item``, ``__bool__``, ``__int__``/``__float__``, ``tolist``, ``cpu``/``numpy``), host data
    made into a device tensor (``tensor``/``as_tensor`` with a ``device``), and the ops whose output size
    depends on the data (``nonzero``, boolean masks, ``masked_select``, ``unique``). ``x.to(device)`` of a
    host tensor cannot be told apart from a no-op on a CPU-only machine: ``benchmarks/gpu_check.py`` counts
    those on a GPU (``torch.cuda.set_sync_debug_mode``). Each record names the line that called the op.
    """

    READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu", "numpy"}
    DATA_DEPENDENT = {"nonzero", "masked_select", "unique", "argwhere", "bincount", "repeat_interleave"}

    def __init__(self, start: int = 2, steps: int = 4) -> None:
        self.start, self.stop = start, start + steps
        self.records: list[str] = []
        self.by_step: dict[int, list[str]] = {}  # global step -> its records (logging steps vs the others)
        self._step = start
        self._mode: TorchFunctionMode | None = None

    #: code whose host reads count: ours, Lightning's, torchmetrics' and torch's weight averaging. Reads deep
    #: inside torch's own kernels' Python (e.g. CPU-only optimizer paths) say nothing about a GPU step.
    WATCHED = ("lit_vision", "lightning", "torchmetrics", "swa_utils")

    def _record(self, what: str) -> None:
        # the frames of this recorder (its torch-function mode) and of torch's dispatch are not callers
        skipped = (_THIS_FILE, "overrides.py")
        frames = [f for f in traceback.extract_stack() if not f.filename.endswith(skipped)]
        caller = frames[-1]  # the line that called the op
        if any(name in caller.filename for name in self.WATCHED):
            record = f"{what} at {Path(caller.filename).name}:{caller.lineno} ({caller.name})"
            self.records.append(record)
            self.by_step.setdefault(self._step, []).append(record)

    def _mode_class(self) -> type[TorchFunctionMode]:
        recorder = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = getattr(func, "__name__", str(func))
                if name in recorder.READS or name in recorder.DATA_DEPENDENT:
                    recorder._record(name)
                elif name in ("__getitem__", "__setitem__", "index_put_") and any(
                    isinstance(a, torch.Tensor) and a.dtype == torch.bool
                    for a in (args[1] if isinstance(args[1], tuple) else (args[1],))
                ):
                    recorder._record(f"{name} with a boolean mask")
                elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
                    recorder._record(f"{name} onto a device")  # host data copied to the device
                return func(*args, **kwargs)

        return Mode

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step = trainer.global_step
        if trainer.global_step == self.start and self._mode is None:
            self._mode = self._mode_class()()
            self._mode.__enter__()
        elif trainer.global_step == self.stop and self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    def on_train_end(self, trainer, pl_module) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
