"""How closely a fast mode's scores follow float32's on judged queries: Spearman rho, top-1 kept, NDCG@10.

Shared by the accuracy scripts in this folder. Documents are ranked by crossrank's own ranking, as `crossrank eval`
ranks them: equal scores keep the first-stage order. Quantized scores tie often (OpenVINO's static int8 does), and
breaking ties any other way moves NDCG@10 by points while rho and top-1 stay put.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from crossrank.engine.ranking import rank
from crossrank.evaluate.metrics import mean, per_query

# Scores of each query's candidates, in first-stage order, query by query.
Rows = Sequence[Sequence[float]]


@dataclass(frozen=True, slots=True)
class Agreement:
    """A fast mode's scores against the reference's, over the same queries and candidates."""

    pairs: int
    queries: int
    spearman: float  # rank correlation of all pairs' scores
    top1_kept: int  # queries whose best-scored candidate is the reference's


def agreement(reference: Rows, rows: Rows) -> Agreement:
    """Spearman rho over every pair and the queries whose top-1 candidate is unchanged."""
    flat_reference = [x for row in reference for x in row]
    flat = [x for row in rows for x in row]
    kept = sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(reference, rows, strict=True))
    rho = float(spearmanr(flat_reference, flat).statistic)
    return Agreement(pairs=len(flat), queries=len(reference), spearman=rho, top1_kept=kept)


def ndcg_at_10(qrels: Mapping[str, Mapping[str, int]], candidates: Mapping[str, Sequence[str]], rows: Rows) -> float:
    """Mean NDCG@10 of the queries in ``candidates`` (in its order, one row of scores each) reranked by ``rows``."""
    run = {}
    for (query, documents), scores in zip(candidates.items(), rows, strict=True):
        ranked = rank(np.asarray(scores), documents, top_n=None, return_documents=False)
        run[query] = [documents[d.index] for d in ranked]
    return mean(per_query({q: qrels[q] for q in run if q in qrels}, run)["ndcg@10"])
