"""Campaigns: train several configurations with several seeds and compare them honestly.

``python -m lit_vision.compare CAMPAIGN.yaml`` runs the campaign (see :mod:`lit_vision.compare.campaign`
for the file format), ``python -m lit_vision.compare readme`` regenerates the result tables of
docs/results.md.
"""

from lit_vision.compare.campaign import Campaign, CampaignError, Cell, Technique
from lit_vision.compare.readme import ReadmeError, update_readme
from lit_vision.compare.runner import run_campaign
from lit_vision.compare.stats import compare_to_baseline
from lit_vision.compare.summary import render_tables, write_campaign_summary

__all__ = [
    "Campaign",
    "CampaignError",
    "Cell",
    "ReadmeError",
    "Technique",
    "compare_to_baseline",
    "render_tables",
    "run_campaign",
    "update_readme",
    "write_campaign_summary",
]
