"""FlagEmbedding 1.4.2's own LLM rerankers, run in their environment (.ci/peer_env.sh: transformers < 5).

The parity tests start it with the Python in ``CROSSRANK_TEST_FLAG_PYTHON`` (tests/families/flag_peer.py)::

    $CROSSRANK_TEST_FLAG_PYTHON reference_flag_peer.py < request.json > answer.json

request: ``{"kind": "gemma" | "layerwise", "model": DIR, "pairs": [[query, passage], ...], "options": {...}}``
with options among ``max_length``, ``query_max_length``, ``prompt``, ``cutoff_layers`` (layerwise), each left out
for FlagEmbedding's default. answer: ``{"scores": [...]}``, raw scores in the pairs' order (layerwise with several
cutoff layers: one list per layer, in ascending layer order). CPU, float32. It imports nothing from crossrank.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> None:
    request = json.load(sys.stdin)
    from FlagEmbedding import FlagLLMReranker, LayerWiseFlagLLMReranker

    options: dict[str, Any] = request.get("options") or {}
    init: dict[str, Any] = {"devices": "cpu", "use_fp16": False, "use_bf16": False}
    init.update({k: v for k, v in options.items() if v is not None})
    kind = request["kind"]
    reranker = (FlagLLMReranker if kind == "gemma" else LayerWiseFlagLLMReranker)(request["model"], **init)
    reranker.model.float()
    scores = reranker.compute_score([list(pair) for pair in request["pairs"]])
    json.dump({"scores": scores}, sys.stdout)


if __name__ == "__main__":
    main()
