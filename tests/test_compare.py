"""lit_vision.compare: campaigns end to end on tiny data, resume, the tie rule, README regeneration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import ROOT, make_imagefolder

from lit_vision.compare import Campaign, CampaignError, ReadmeError, budget, render_tables, update_readme
from lit_vision.compare.__main__ import main as compare_main
from lit_vision.compare.budget import plan_schedule
from lit_vision.compare.results import RESULT_FIELDS, append_row, read_rows

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Campaign paths are relative to the working directory, as for train.py; cells import ``helpers``
    (tests/helpers/: the callbacks given by class path)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYTHONPATH", str(TESTS))


def tiny_args(data: Path, tmp_path: Path, name: str) -> list[str]:
    return [
        "--name", name,
        "--base", "configs/cifar10_compact.yaml",
        "--set", "data.dataset=imagefolder", f"data.data_dir={data}", "data.val_size=12",
        "data.batch_size=8", "trainer.enable_model_summary=false",
        "--results", str(tmp_path / "results"),
        "--runs", str(tmp_path / "runs"),
        "--devices", "cpu",
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow  # whole campaigns of real fits: the default run keeps the unit-level checks
def test_two_by_two_campaign_writes_every_artifact(tiny_folder: Path, tmp_path: Path) -> None:
    args = [
        *tiny_args(tiny_folder, tmp_path, "two"),
        "--preset",
        "techniques",
        "--techniques",
        "label_smoothing",
    ]
    assert compare_main([*args, "--seeds", "2", "--max-epochs", "1"]) == 0  # 2 cells x 2 seeds
    out = tmp_path / "results" / "two"
    rows = read_rows(out / "results.csv")
    assert sorted((r["cell"], r["seed"]) for r in rows) == [
        ("baseline", "0"), ("baseline", "1"), ("label_smoothing", "0"), ("label_smoothing", "1"),
    ]  # fmt: skip
    for row in rows:
        assert 0.0 <= float(row["val_acc_final"]) <= float(row["val_acc_best"]) <= 1.0
        assert row["test_acc"] != ""  # tiny_folder has a test split: the best checkpoint was tested
        assert int(row["params"]) > 0 and int(row["macs"]) > 0 and float(row["wall_s"]) > 0
        assert float(row["train_images_per_s"]) > 0 and float(row["peak_rss_mb"]) > 100
        assert row["device"] and "torch" in row["versions"] and row["epochs"] == "1"
        assert (out / "curves" / f"{row['cell']}-s{row['seed']}.csv").is_file()
        run_dir = Path(row["run_dir"])
        assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    # the seeds are different runs: seed_everything reached the cells
    base = [r for r in rows if r["cell"] == "baseline"]
    curves = [(out / "curves" / f"baseline-s{r['seed']}.csv").read_text() for r in base]
    assert curves[0] != curves[1] or base[0]["val_acc_final"] != base[1]["val_acc_final"]
    for name in ("summary.md", "acc_vs_time.png", "acc_vs_params.png", "curves.png", "campaign.yaml"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert "`label_smoothing`" in summary and "baseline" in summary and "±" in summary
    assert "lit_vision.compare" in (out / "command.txt").read_text()


@pytest.mark.slow  # whole campaigns of real fits: the default run keeps the unit-level checks
def test_stopped_campaign_resumes_without_rerunning_finished_cells(tiny_folder: Path, tmp_path: Path) -> None:
    args = [
        *tiny_args(tiny_folder, tmp_path, "stop"),
        "--preset",
        "grid",
        "--backbones",
        "compact_cifar",
        "cnn",
    ]
    assert compare_main([*args, "--max-epochs", "1"]) == 0  # two finished cells
    runs = tmp_path / "runs" / "stop"
    attempts = {c: len(json.loads((runs / f"{c}-s0" / "cell.json").read_text())["attempts"])
                for c in ("compact_cifar", "cnn")}  # fmt: skip
    assert attempts == {"compact_cifar": 1, "cnn": 1}

    # A second seed whose first run is stopped by SIGTERM mid-epoch 1 (step 8 of 12): the campaign reports
    # the failure, keeps the finished rows, and the interrupted cells keep interrupted.ckpt.
    stop = json.dumps([{"class_path": "helpers.StopAt", "init_args": {"step": 8, "how": "sigterm"}}])
    more = [*args, "--seeds", "2", "--max-epochs", "2"]
    set_stop = ["--set", *tiny_args(tiny_folder, tmp_path, "stop")[5:10], f"trainer.callbacks={stop}"]
    assert compare_main([*more, *set_stop]) == 1
    assert len(read_rows(tmp_path / "results" / "stop" / "results.csv")) == 2
    assert (runs / "cnn-s1" / "version_0" / "checkpoints" / "interrupted.ckpt").is_file()

    assert compare_main(more) == 0  # started again: seed-0 cells skipped, seed-1 cells resumed
    rows = read_rows(tmp_path / "results" / "stop" / "results.csv")
    assert sorted((r["cell"], r["seed"]) for r in rows) == [
        ("cnn", "0"), ("cnn", "1"), ("compact_cifar", "0"), ("compact_cifar", "1"),
    ]  # fmt: skip
    for cell in ("compact_cifar", "cnn"):
        assert len(json.loads((runs / f"{cell}-s0" / "cell.json").read_text())["attempts"]) == 1
        resumed = json.loads((runs / f"{cell}-s1" / "cell.json").read_text())
        assert [a["exit"] != 0 for a in resumed["attempts"]] == [True, False]
        assert (runs / f"{cell}-s1" / "version_1").is_dir()  # the resumed run's own directory
    second = next(r for r in rows if (r["cell"], r["seed"]) == ("cnn", "1"))
    assert second["epochs"] == "2" and second["steps"] == "12"  # finished from the checkpoint, not redone


@pytest.mark.slow  # whole campaigns of real fits: the default run keeps the unit-level checks
def test_without_a_test_split_a_tta_config_is_scored_on_the_validation_split(tmp_path: Path) -> None:
    """No test split and a TTA callback (the speedrun's case): the best checkpoint is tested on the held-out
    validation split with the TTA views and recorded as val_acc_tta, never as a test accuracy."""
    data = make_imagefolder(tmp_path / "data", 3, n_train=20, n_test=None)
    args = [*tiny_args(data, tmp_path, "tta"), "--preset", "grid", "--techniques", "tta", "--max-epochs", "1"]
    assert compare_main(args) == 0
    out = tmp_path / "results" / "tta"
    (row,) = read_rows(out / "results.csv")
    assert row["test_acc"] == "" and 0.0 <= float(row["val_acc_tta"]) <= 1.0
    # the TTA score is the same checkpoint on the same 12 images: a multiple of 1/12 like val/acc
    assert abs(float(row["val_acc_tta"]) * 12 - round(float(row["val_acc_tta"]) * 12)) < 1e-4
    table = (out / "summary.md").read_text()
    assert "| val acc with TTA |" in table and "test acc" not in table


def test_a_results_file_with_older_columns_is_migrated_before_appending(tmp_path: Path) -> None:
    """A campaign started before a column was added keeps its rows and goes on appending under the new
    header (csv.DictReader would otherwise read the new row's values under the old names)."""
    path = tmp_path / "results.csv"
    old_fields = [f for f in RESULT_FIELDS if f != "val_acc_tta"]
    old = {**fake_row("baseline", 0, 0.80), "test_acc": 0.75}
    path.write_text(",".join(old_fields) + "\n" + ",".join(str(old.get(f, "")) for f in old_fields) + "\n")
    append_row(path, {**fake_row("baseline", 1, 0.82), "val_acc_tta": 0.84})
    rows = read_rows(path)
    assert list(rows[0]) == RESULT_FIELDS
    assert [(r["seed"], r["val_acc_final"], r["test_acc"], r["val_acc_tta"]) for r in rows] == [
        ("0", "0.8", "0.75", ""), ("1", "0.82", "", "0.84"),
    ]  # fmt: skip
    path.write_text("group,cell,seed,from_the_future\na,b,0,1\n")
    with pytest.raises(ValueError, match="from_the_future"):
        append_row(path, fake_row("baseline", 2, 0.8))


@pytest.mark.slow  # whole campaigns of real fits: the default run keeps the unit-level checks
def test_a_stopped_runner_stops_its_run_and_records_the_attempt(tiny_folder: Path, tmp_path: Path) -> None:
    """SIGTERM to `python -m lit_vision.compare` (a session ending): the running cell writes
    interrupted.ckpt, its attempt is recorded with its time, and the runner exits 143."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [*tiny_args(tiny_folder, tmp_path, "sig"), "--preset", "grid", "--backbones", "compact_cifar",
            "--max-epochs", "500"]  # fmt: skip
    runner = subprocess.Popen(
        [sys.executable, "-m", "lit_vision.compare", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    last = tmp_path / "runs" / "sig" / "compact_cifar-s0" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline and runner.poll() is None:
        time.sleep(0.5)
    assert last.is_file(), "the cell never finished an epoch"
    os.kill(runner.pid, signal.SIGTERM)
    assert runner.wait(timeout=120) == 128 + signal.SIGTERM
    state = json.loads((last.parents[2] / "cell.json").read_text())
    (attempt,) = state["attempts"]
    assert attempt["exit"] not in (0, None) and attempt["wall_s"] > 0
    assert (last.parent / "interrupted.ckpt").is_file()


def test_an_attempt_lost_with_its_runner_still_counts_its_time(tmp_path: Path) -> None:
    """The runner records an attempt when it starts; one that never got an exit (the runner died with it)
    is closed on the next start with the time until its run last wrote a file."""
    import os

    from lit_vision.compare.runner import _close_lost_attempts

    run = tmp_path / "cell-s0"
    (run / "version_0").mkdir(parents=True)
    metrics = run / "version_0" / "metrics.csv"
    metrics.write_text("epoch\n0\n")
    os.utime(metrics, (1_000_300.0, 1_000_300.0))
    state = {"attempts": [{"started": 1_000_000.0, "wall_s": None, "exit": None}]}
    _close_lost_attempts(run, state)
    assert state["attempts"] == [{"started": 1_000_000.0, "wall_s": 300.0, "exit": "lost"}]
    _close_lost_attempts(run, state)  # closed once: a finished attempt is left alone
    assert state["attempts"][0]["wall_s"] == 300.0


# ---------------------------------------------------------------------------------------------- campaigns
def test_presets_expand_to_the_expected_cells() -> None:
    spec = {"name": "x", "base": ["configs/cifar10_compact.yaml"], "max_epochs": 1}
    techniques = Campaign.from_dict({**spec, "preset": "techniques", "techniques": ["ema", "mixing", "fgsm"]})
    assert [c.id for c in techniques.cells()] == ["baseline", "ema", "mixing", "fgsm", "all"]
    assert techniques.cells()[-1].configs == tuple(
        f"configs/tricks/{t}.yaml" for t in ("ema", "mixing", "fgsm")
    )
    archs = Campaign.from_dict({**spec, "preset": "architectures", "backbones": "all"})
    assert [c.id for c in archs.cells()] == sorted(
        p.stem for p in (ROOT / "configs" / "models").glob("*.yaml")
    )
    acts = Campaign.from_dict({**spec, "preset": "activations", "backbones": ["resnet_tiny"]})
    assert [c.id for c in acts.cells()] == ["relu", "gelu", "silu", "mish", "leaky_relu"]
    assert acts.cells()[1].overrides == (("model.backbone_kwargs.act", "gelu"),)
    grid = Campaign.from_dict({**spec, "backbones": ["cnn", "resnet_tiny"], "techniques": ["ema", "cutout"]})
    assert [c.id for c in grid.cells()] == ["cnn-ema", "cnn-cutout", "resnet_tiny-ema", "resnet_tiny-cutout"]
    full = Campaign.from_dict({**spec, "preset": "full", "backbones": ["resnet_tiny"], "techniques": ["ema"],
                               "activations": ["relu", "gelu"]})  # fmt: skip
    assert [(c.group, c.id) for c in full.cells()] == [
        ("architectures", "resnet_tiny"), ("techniques", "baseline"), ("techniques", "ema"),
        ("activations", "act-relu"), ("activations", "act-gelu"),
    ]  # fmt: skip
    apart = Campaign.from_dict(
        {**spec, "preset": "techniques", "techniques": ["randaugment", "trivialaugment"], "together": False}
    )
    assert [c.id for c in apart.cells()] == ["baseline", "randaugment", "trivialaugment"]
    assert apart.to_dict()["together"] is False and "together" not in techniques.to_dict()
    assert Campaign.from_dict(apart.to_dict()).cells() == apart.cells()  # what campaign.yaml round-trips
    smoothing = {"name": "ls05", "set": {"model.label_smoothing": 0.05}}
    custom = Campaign.from_dict({**spec, "preset": "techniques", "techniques": [smoothing]})
    assert custom.cells()[1].overrides == (("model.label_smoothing", 0.05),)


def test_a_technique_wins_over_the_campaign_set(tmp_path: Path) -> None:
    """The techniques campaign pins `model.label_smoothing: 0` for its baseline: the label_smoothing
    technique's fragment must still set it in its cell (the resolved config the run would train with)."""
    import subprocess
    import sys

    import yaml

    from lit_vision.compare.runner import cell_command

    campaign = Campaign.from_dict(
        {"name": "x", "preset": "techniques", "base": ["configs/cifar10_compact.yaml"], "max_epochs": 1,
         "set": {"model.label_smoothing": 0.0}, "techniques": ["label_smoothing"]}
    )  # fmt: skip
    smoothing = {c.id: c for c in campaign.cells()}
    args = cell_command(campaign, smoothing["label_smoothing"], 0, tmp_path / "run")
    expected = yaml.safe_load((ROOT / "configs/tricks/label_smoothing.yaml").read_text())["model"]
    printed = subprocess.run(
        [sys.executable, "-m", "lit_vision.cli", "fit", *args, "--print_config"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert yaml.safe_load(printed)["model"]["label_smoothing"] == expected["label_smoothing"] > 0
    baseline = cell_command(campaign, smoothing["baseline"], 0, tmp_path / "run")
    assert "--model.label_smoothing=0.0" in baseline


def test_every_shipped_campaign_file_parses() -> None:
    files = sorted((ROOT / "configs" / "campaigns").glob("*.yaml"))
    assert {f.stem for f in files} >= {"techniques", "architectures", "activations"}
    for path in files:
        campaign = Campaign.from_file(path.relative_to(ROOT))
        assert campaign.cells() and campaign.name == path.stem


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"techniques": ["no_such_trick"]}, "Unknown technique 'no_such_trick'"),
        ({"max_epochs": None}, "budget"),
        ({"backbones": ["resnet99"]}, "No model config"),
        ({"colour": "red"}, "Unknown campaign keys"),
        ({"preset": "techniques"}, "needs a list of techniques"),
        ({"baseline": "nope", "techniques": ["ema"]}, "baseline 'nope'"),
    ],
)
def test_bad_campaigns_are_refused_with_a_message(spec: dict, message: str) -> None:
    base = {"name": "x", "base": ["configs/cifar10_compact.yaml"], "max_epochs": 1}
    with pytest.raises(CampaignError, match=message):
        Campaign.from_dict({**base, **spec})


def test_flags_override_the_campaign_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_main(["configs/campaigns/techniques.yaml", "--seeds", "1", "--max-epochs", "2",
                         "--techniques", "ema", "--dry-run"]) == 0  # fmt: skip
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == 2  # baseline and ema, one seed
    assert all("--trainer.max_epochs=2" in c and "--seed_everything=0" in c for c in commands)
    assert "configs/tricks/ema.yaml" in commands[1] and "--model.label_smoothing=0.0" in commands[0]


# ---------------------------------------------------------------------------------------------- the summary
def fake_row(cell: str, seed: int, acc: float, group: str = "techniques") -> dict:
    return {"group": group, "cell": cell, "seed": seed, "val_acc_final": acc, "val_acc_best": acc,
            "wall_s": 60.0, "params": 1000, "device": "test CPU (2 cores)"}  # fmt: skip


def verdicts(table: str) -> dict[str, str]:
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| `")]
    return {r[1].strip().strip("`"): r[5].strip() for r in rows}


def test_a_difference_inside_the_seed_spread_is_a_tie(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    for cell, accs in {"baseline": [0.80, 0.82], "close": [0.81, 0.83], "far": [0.90, 0.91],
                       "low": [0.70, 0.71]}.items():  # fmt: skip
        for seed, acc in enumerate(accs):
            append_row(path, fake_row(cell, seed, acc))
    table = render_tables(read_rows(path))
    # close: +1.00 points against a spread of sqrt(2) x 1.41 = 2.00 -> a tie, not a win
    assert verdicts(table) == {"baseline": "baseline", "close": "tie", "far": "better", "low": "worse"}
    assert "+1.00 (± 2.00)" in table and "81.00% ± 1.41" in table
    ordered = [r.split("|")[1].strip().strip("`") for r in table.splitlines() if r.startswith("| `")]
    assert ordered == ["far", "close", "baseline", "low"]  # sorted by mean accuracy


def test_a_single_seed_names_no_winner(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    append_row(path, fake_row("a", 0, 0.80, "architectures"))
    append_row(path, fake_row("b", 0, 0.95, "architectures"))
    assert verdicts(render_tables(read_rows(path))) == {"a": "baseline", "b": "no spread (1 seed)"}


def test_unclean_timings_are_marked(tmp_path: Path) -> None:
    """A run beside another job (load above the cores), or one whose wall time is shorter than its training
    (an attempt went unrecorded), gets a * on its wall time; a clean one does not."""
    path = tmp_path / "results.csv"
    clean = {"load_avg": 1.9, "cpu_count": 2, "train_s": 50.0}
    append_row(path, {**fake_row("baseline", 0, 0.80), **clean})
    append_row(path, {**fake_row("busy", 0, 0.80), **clean, "load_avg": 3.2})
    append_row(path, {**fake_row("lost", 0, 0.80), **clean, "train_s": 90.0})  # wall_s is 60
    rows = {r.split("|")[1].strip().strip("`"): r.split("|")[9].strip() for r in
            render_tables(read_rows(path)).splitlines() if r.startswith("| `")}  # fmt: skip
    assert rows == {"baseline": "1.0 min", "busy": "1.0 min*", "lost": "1.0 min*"}


def test_budget_plan_fills_the_budget_with_whole_or_shortened_epochs() -> None:
    # 0.1 s/step, 100 steps/epoch, 2 s of validation per epoch, 120 s budget -> 0.9 * 120 = 108 s usable:
    # 9 epochs cost 9 * (10 + 2) = 108 s
    fast = plan_schedule(120, 0.1, 2.0, 100)
    assert fast == {"max_epochs": 9, "limit_train_batches": None, "planned_steps": 900}
    # 10 s/step: one shortened epoch of (108 - 2) / 10 = 10 steps
    slow = plan_schedule(120, 10.0, 2.0, 100)
    assert slow == {"max_epochs": 1, "limit_train_batches": 10, "planned_steps": 10}
    # 1.5 epochs' worth: 2 epochs of fewer batches rather than one full epoch and an idle remainder
    mid = plan_schedule(120, 0.7, 0.0, 100)
    assert mid["max_epochs"] == 2 and mid["limit_train_batches"] == 77


def test_step_timing_is_robust_to_a_slow_moment() -> None:
    """A few slow steps (another process woke up) must not set the plan: the median of a long window does;
    warm-up steps are not counted, and a very slow model stops being timed at ``max_s``."""
    durations = iter([50.0, 50.0] + [9.0] * 3 + [1.0] * 20)  # 2 warm-up steps, a slow moment, then steady
    now = [0.0]

    def step() -> None:
        now[0] += next(durations)

    assert (
        budget.time_steps(step, warmup=2, min_steps=10, min_s=15.0, max_s=60.0, clock=lambda: now[0]) == 1.0
    )
    calls = []

    def slow_step() -> None:
        calls.append(1)
        now[0] += 40.0

    assert (
        budget.time_steps(slow_step, warmup=0, min_steps=10, min_s=15.0, max_s=60.0, clock=lambda: now[0])
        == 40.0
    )
    assert len(calls) == 2  # 40 s, then 80 s >= max_s: stop


def test_budget_measures_a_real_run_and_plans_it(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m lit_vision.compare.budget`` builds the run from CLI arguments, times it (a short window
    here, longer than one pass over the tiny data) and prints a plan that fits the budget."""
    monkeypatch.setattr(budget, "MIN_TIMED_S", 0.0)
    monkeypatch.setattr(budget, "MIN_TIMED_STEPS", 12)
    args = ["--config", "configs/cifar10_compact.yaml", "--data.dataset", "imagefolder",
            "--data.data_dir", str(tiny_folder), "--data.val_size", "12", "--data.batch_size", "8",
            "--data.num_workers", "0"]  # fmt: skip
    timing = budget.measure(args)
    assert timing["step_s"] > 0 and timing["val_epoch_s"] > 0 and timing["batch_size"] == 8
    assert timing["train_images_per_s"] == pytest.approx(8 / timing["step_s"])
    budget.main(["0.5", "--", *args])
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["budget_s"] == 30.0 and plan["planned_steps"] >= 1
    used = plan["planned_steps"] * plan["step_s"] + plan["max_epochs"] * plan["val_epoch_s"]
    assert (
        used <= 0.9 * 30.0 + plan["step_s"]
    )  # the plan fills at most SAFETY of the budget (one step's rounding)


# ---------------------------------------------------------------------------------------------- README
def readme_fixture(tmp_path: Path) -> tuple[Path, Path]:
    results = tmp_path / "results"
    for seed, acc in enumerate([0.80, 0.82]):
        append_row(results / "demo" / "results.csv", fake_row("baseline", seed, acc))
        append_row(results / "demo" / "results.csv", fake_row("ema", seed, acc + 0.001))
    (results / "demo" / "command.txt").write_text(
        "python -m lit_vision.compare configs/campaigns/demo.yaml\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\nBefore.\n\n<!-- results:demo -->\nstale table\n<!-- /results:demo -->\n\nAfter.\n"
    )
    return readme, results


def test_readme_is_regenerated_between_markers_and_idempotent(tmp_path: Path) -> None:
    readme, results = readme_fixture(tmp_path)
    assert update_readme(readme, results) == ["demo"]
    once = readme.read_text()
    assert "stale table" not in once and "Before." in once and "After." in once
    assert "python -m lit_vision.compare configs/campaigns/demo.yaml" in once
    assert "| `ema` | 2 |" in once and "tie" in once
    assert "](results/demo/curves.png)" in once  # relative to the page's folder
    update_readme(readme, results)
    assert readme.read_text() == once  # twice changes nothing


def test_plot_links_are_relative_to_the_page(tmp_path: Path) -> None:
    """A page in docs/ links to ../results/NAME/, so the links resolve on disk, in a repository browser and
    in the docs site (mkdocs.yml's hook serves results/ there)."""
    _, results = readme_fixture(tmp_path)
    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    page.write_text("<!-- results:demo -->\n<!-- /results:demo -->\n")
    update_readme(page, results)
    links = re.findall(r"\]\(([^)]+\.png)\)", page.read_text())
    assert links == [f"../results/demo/{n}" for n in ("acc_vs_time.png", "acc_vs_params.png", "curves.png")]
    update_readme(page, results, link_base=tmp_path)  # links relative to another folder on request
    assert "](results/demo/curves.png)" in page.read_text()


def test_readme_refuses_missing_markers_and_missing_results(tmp_path: Path) -> None:
    readme, results = readme_fixture(tmp_path)
    with pytest.raises(ReadmeError, match="no markers for \\['other'\\]"):
        update_readme(readme, results, ["other"])
    readme.write_text("<!-- results:demo -->\nno closing marker\n")
    with pytest.raises(ReadmeError, match="exactly one"):
        update_readme(readme, results)
    readme.write_text("<!-- results:ghost -->\n<!-- /results:ghost -->\n")
    with pytest.raises(ReadmeError, match="No results for campaign 'ghost'"):
        update_readme(readme, results)
    readme.write_text("no markers at all\n")
    with pytest.raises(ReadmeError, match="has no"):
        update_readme(readme, results)
    assert compare_main(["readme", "--readme", str(readme), "--results", str(results)]) == 1


def test_the_results_page_is_up_to_date_with_the_committed_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `python -m lit_vision.compare readme` (run at the repository root, no arguments) would write is
    what docs/results.md holds: the command runs on a copy, beside the committed results/ and configs/
    (campaign files name their configs relative to the root)."""
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "results.md"
    page.write_text((ROOT / "docs" / "results.md").read_text())
    for folder in ("results", "configs"):
        (tmp_path / folder).symlink_to(ROOT / folder, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert compare_main(["readme"]) == 0
    assert "docs/results.md: regenerated techniques, architectures" in capsys.readouterr().out
    assert page.read_text() == (ROOT / "docs" / "results.md").read_text(), (
        "run: python -m lit_vision.compare readme"
    )
