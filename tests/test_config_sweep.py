"""Every shipped config at 1, 2 and 8 optimizer steps through ``train.py``'s entry point: no traceback.

A new user's first run is a smoke test (``--trainer.max_steps 4``), and short runs used to crash: a OneCycle
warm-up of zero steps, early stopping before the first validation. Every file under ``configs/`` is run here,
the complete configs alone and with every trick fragment, each fragment on top of the default config: a new
config cannot ship without passing. Validation is limited to one batch; on the tiny data an epoch is about 8
steps, so 1- and 2-step runs end before the first validation and 8-step runs validate.

``configs/campaigns/*`` are ``python -m lit_vision.compare`` files, not CLI configs (tests/test_compare.py).
The default suite runs each config and fragment at 2 steps; 1 and 8 steps, and every config with all the trick
fragments, are ``slow`` (``make test-slow``; CI's ``make test-all`` runs both).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import CONFIGS, QUIET, ROOT, data_args
from lightning.pytorch.accelerators import CUDAAccelerator

from lit_vision.cli import main, run

BASE = "configs/cifar10_compact.yaml"
TRICKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs" / "tricks").glob("*.yaml"))
FRAGMENTS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "configs").glob("*/*.yaml")
    if p.parent.name not in ("campaigns", "speedrun")  # campaigns: not CLI configs; speedrun: complete
)
#: (configs in --config order, id, whether the default suite runs it at 2 steps)
COMBOS = (
    [([config], config, True) for config in CONFIGS]
    + [([config, *TRICKS], f"{config}+tricks", False) for config in CONFIGS]
    + [([BASE, fragment], f"{BASE}+{fragment}", True) for fragment in FRAGMENTS]
)
#: (configs, steps): 2 steps of each combo in the default suite (but the all-tricks ones), the rest slow
CASES = [
    pytest.param(
        configs, steps, id=f"{label}-{steps}", marks=[] if steps == 2 and fast else [pytest.mark.slow]
    )
    for configs, label, fast in COMBOS
    for steps in (1, 2, 8)
]
#: fragments that a machine like CI's refuses with one error line: no GPU, and no multi-node launcher
REFUSED_HERE = {
    "configs/trainer/ddp_multinode.yaml": "a multi-node run is started once per node",
    **(
        {}
        if CUDAAccelerator.is_available()
        else {"configs/trainer/gpu.yaml": "this machine has no such device"}
    ),
}


def test_the_sweep_covers_every_shipped_config() -> None:
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    swept = {config for configs, _, _ in COMBOS for config in configs}
    assert shipped - swept == {p for p in shipped if p.startswith("configs/campaigns/")}


@pytest.mark.parametrize(("configs", "steps"), CASES)
def test_short_run_ends_without_a_traceback(
    configs: list[str],
    steps: int,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # configs/logger/wandb.yaml, tricks/wandb_media.yaml
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    argv = ["train.py", "fit"]
    for config in configs:
        argv += ["--config", str(ROOT / config)]
    argv += [
        *data_args(configs[0], request),
        f"--trainer.max_steps={steps}",
        "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        *QUIET,
    ]
    monkeypatch.setattr(sys, "argv", argv)
    refused = next((msg for config, msg in REFUSED_HERE.items() if config in configs), None)
    code = 0
    try:
        run()
    except SystemExit as exit_info:
        code = exit_info.code
    finally:
        import wandb

        wandb.finish()  # a W&B run left open would be reused by the next test in this process
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    if refused is not None:
        assert code == 1
        errors = [line for line in out.err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and refused in errors[0], out.err[-2000:]
        return
    assert code in (0, None), out.err[-3000:]
    checkpoints = list((tmp_path / "runs").rglob("last.ckpt"))
    assert len(checkpoints) == 1  # a finished run, whatever its length, leaves its final state


@pytest.mark.parametrize("extra", [[], ["configs/trainer/ddp.yaml"]], ids=["default", "default+ddp"])
def test_the_default_config_trains_4_steps(
    extra: list[str], tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's first try: OneCycleLR's pct_start 0.25 of 4 steps is a zero-length warm-up in torch
    (ZeroDivisionError); the run gets a 1-step warm-up and says so."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(ROOT / BASE), *(f"--config={ROOT / c}" for c in extra)]
    args += [*data_args(BASE, request), "--trainer.max_steps=4", "--trainer.enable_progress_bar=false"]
    with pytest.warns(UserWarning, match=r"OneCycleLR: pct_start=0.25 of a 4-step run"):
        cli = main(args)
    assert cli.trainer.global_step == 4
