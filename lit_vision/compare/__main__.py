"""``python -m lit_vision.compare``: train and rank configurations; keep the docs' result tables true.

    python -m lit_vision.compare configs/campaigns/techniques.yaml            # run (or resume) a campaign
    python -m lit_vision.compare configs/campaigns/techniques.yaml --seeds 1 --max-epochs 2   # flags win
    python -m lit_vision.compare --name quick --preset techniques --base configs/cifar10_compact.yaml \\
        --techniques ema mixing --max-epochs 3                               # no campaign file
    python -m lit_vision.compare summarize techniques                       # summary.md + plots again
    python -m lit_vision.compare readme                                     # docs/results.md from results/
    python -m lit_vision.compare readme techniques --readme other.md        # one block, another page
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from lit_vision.compare.campaign import PRESETS, Campaign, CampaignError
from lit_vision.compare.readme import DEFAULT_PAGE, ReadmeError, update_readme
from lit_vision.compare.runner import cell_command, run_campaign
from lit_vision.compare.summary import write_campaign_summary

__all__ = ["main"]


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lit_vision.compare",
        description="Train every cell of a campaign (base configs x backbones/techniques/activations x "
        "seeds) and write results/<name>/: results.csv, summary.md, plots. Flags override the file.",
    )
    p.add_argument("campaign", nargs="?", help="campaign file (configs/campaigns/*.yaml)")
    p.add_argument("--name", help="campaign name: results/<name>/ (default: the file's stem)")
    p.add_argument("--preset", choices=PRESETS)
    p.add_argument("--base", nargs="+", help="base config files, composed left to right")
    p.add_argument("--backbones", nargs="+", help="configs/models/<name>.yaml names, or 'all'")
    p.add_argument("--techniques", nargs="+", help="configs/{tricks,recipes,ablations}/<name>.yaml names")
    p.add_argument("--activations", nargs="+", help="values of model.backbone_kwargs.act, or 'all'")
    p.add_argument(
        "--set", nargs="+", metavar="KEY=VALUE", help="overrides for every run (replace the file's)"
    )
    p.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...)")
    p.add_argument("--max-epochs", type=int, help="epochs per run")
    p.add_argument("--max-time", type=float, help="minutes of training per run (a fitted schedule)")
    p.add_argument("--baseline", help="the cell the others are compared with")
    p.add_argument(
        "--no-together",
        dest="together",
        action="store_const",
        const=False,
        default=None,
        help="techniques preset: no last cell with every technique at once (for alternatives)",
    )
    p.add_argument(
        "--devices",
        default="auto",
        help="'auto' (every visible GPU, one run per GPU; the CPU when there is none), 'cpu', or GPU "
        "indices such as 0,1,2",
    )
    p.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")
    p.add_argument("--runs", type=Path, default=Path("runs/campaigns"), help="run directories root")
    p.add_argument("--dry-run", action="store_true", help="print each run's train.py command and exit")
    return p


def _gpus(devices: str) -> list[int]:
    if devices == "cpu":
        return []
    if devices == "auto":
        import torch

        return list(range(torch.cuda.device_count()))
    try:
        return [int(d) for d in devices.split(",") if d.strip()]
    except ValueError:
        raise CampaignError(f"--devices takes auto, cpu or GPU indices like 0,1; got {devices!r}") from None


def _campaign(args: argparse.Namespace) -> Campaign:
    flags = {
        "name": args.name,
        "preset": args.preset,
        "base": args.base,
        "backbones": args.backbones,
        "techniques": args.techniques,
        "activations": args.activations,
        "set": args.set,
        "seeds": args.seeds,
        "max_epochs": args.max_epochs,
        "max_time": args.max_time,
        "baseline": args.baseline,
        "together": args.together,
    }
    if args.campaign:
        return Campaign.from_file(args.campaign, **flags)
    return Campaign.from_dict({k: v for k, v in flags.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["readme"]:
            p = argparse.ArgumentParser(
                prog="python -m lit_vision.compare readme",
                description="Regenerate the result tables between '<!-- results:NAME -->' and "
                "'<!-- /results:NAME -->' lines of a Markdown page from results/NAME/ (the docs site's "
                f"results page, {DEFAULT_PAGE}, by default). Run it from the repository root.",
            )
            p.add_argument("names", nargs="*", help="campaigns to regenerate (default: every marker)")
            p.add_argument(
                "--readme",
                type=Path,
                default=DEFAULT_PAGE,
                metavar="PATH",
                help=f"the Markdown page with the markers (default: {DEFAULT_PAGE})",
            )
            p.add_argument(
                "--results", type=Path, default=Path("results"), help="results root (default: results)"
            )
            args = p.parse_args(argv[1:])
            written = update_readme(args.readme, args.results, args.names or None)
            print(f"{args.readme}: regenerated {', '.join(written)}")
            return 0
        if argv[:1] == ["summarize"]:
            p = argparse.ArgumentParser(prog="python -m lit_vision.compare summarize")
            p.add_argument("name", help="campaign name (results/<name>/)")
            p.add_argument("--results", type=Path, default=Path("results"))
            args = p.parse_args(argv[1:])
            out = args.results / args.name
            if not (out / "results.csv").is_file():
                raise CampaignError(f"No {out / 'results.csv'}.")
            campaign = (
                Campaign.from_file(out / "campaign.yaml") if (out / "campaign.yaml").is_file() else None
            )
            print(write_campaign_summary(out, campaign))
            return 0
        args = _run_parser().parse_args(argv)
        campaign = _campaign(args)
        if args.dry_run:
            for cell in campaign.cells():
                for seed in campaign.seeds:
                    root = args.runs / campaign.name / f"{cell.id}-s{seed}"
                    print(
                        shlex.join(["python", "train.py", "fit", *cell_command(campaign, cell, seed, root)])
                    )
            return 0
        command = shlex.join(["python", "-m", "lit_vision.compare", *argv])
        run_campaign(campaign, args.results, args.runs, _gpus(args.devices), command=command)
        return 0
    except (CampaignError, ReadmeError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
