"""Progress of the long jobs outside a Trainer: shown by rank 0 only, and never changes what is iterated."""

from __future__ import annotations

import pytest
from lightning.pytorch.utilities import rank_zero_only

from lit_vision.progress import status, track


def test_rank_zero_shows_the_bar_and_every_item_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(track(iter(range(5)), 5, "Decoding things")) == [0, 1, 2, 3, 4]
    assert "Decoding things" in capsys.readouterr().err


@pytest.mark.parametrize("rank, total", [(1, 5), (0, 1)])
def test_other_ranks_and_short_jobs_stay_quiet(
    rank: int, total: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", rank)
    assert list(track(range(total), total, "Decoding things")) == list(range(total))
    with status("Exporting"):
        pass
    assert capsys.readouterr().err == ""
