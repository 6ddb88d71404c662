"""FlagEmbedding's own LLM rerankers as a reference: reference_flag_peer.py run by the peer environment's Python.

FlagEmbedding 1.4.2 needs transformers < 5, so it cannot run in this environment: ``.ci/peer_env.sh DIR`` builds one
for it, and ``CROSSRANK_TEST_FLAG_PYTHON=DIR/bin/python`` points the tests at it (they skip without it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

FLAG_PYTHON = "CROSSRANK_TEST_FLAG_PYTHON"
_HARNESS = Path(__file__).with_name("reference_flag_peer.py")


def flag_peer_scores(kind: str, model_dir: Path, pairs: Sequence[tuple[str, str]], **options: Any) -> list[Any]:
    """FlagEmbedding's scores of ``pairs`` (``kind``: ``gemma`` or ``layerwise``; ``options``: its keywords)."""
    python = os.environ.get(FLAG_PYTHON)
    if not python:
        pytest.skip(
            "needs FlagEmbedding 1.4.2 in its own environment: run `.ci/peer_env.sh DIR` and set "
            f"{FLAG_PYTHON}=DIR/bin/python"
        )
    request = {"kind": kind, "model": str(model_dir), "pairs": [list(p) for p in pairs], "options": options}
    # Its own environment only: nothing of this one's import path, no hub.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [python, str(_HARNESS)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        pytest.fail(f"FlagEmbedding ({python}) failed with exit code {done.returncode}: {done.stderr[-2000:]}")
    scores: list[Any] = json.loads(done.stdout)["scores"]
    return scores
