"""Fixtures of the evaluation tests: the shared data sets (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the English BEIR-dbpedia subset and the Chinese RGB set (see its PROVENANCE.md)."""
    if not (DATA / "en_beir_dbpedia_subset").is_dir() or not (DATA / "zh_rgb_refine_a").is_dir():
        pytest.skip(f"needs {DATA} (the shared data folder beside the repository is missing)")
    return DATA
