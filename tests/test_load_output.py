"""What loading a model prints: crossrank's own log line, not transformers' "Loading weights" progress bar."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crossrank import Reranker


@pytest.mark.slow
def test_loading_prints_no_progress_bar_and_logs_one_line(
    english_model_dir: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    with caplog.at_level(logging.INFO, logger="crossrank.loader"):
        Reranker(str(english_model_dir), device="cpu").close()
    printed = capfd.readouterr()
    assert "Loading weights" not in printed.err + printed.out
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"loaded {english_model_dir.name}"]
    assert transformers_logging.is_progress_bar_enabled() == shown  # the user's own transformers setting is kept
