"""The BM25 first stage (bm25s) with a tokenizer that reads English and Chinese alike.

Tokens are lower-cased words of letters and digits (minus a short English stopword list) and, for
Chinese/Japanese script with no spaces, overlapping character bigrams. With ``k1=0.9, b=0.4`` and
Lucene's IDF this is the first stage the shared data sets' ``subset.py`` scripts describe.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from crossrank.errors import InputError
from crossrank.evaluate.extras import require

__all__ = ["Bm25Index", "tokenize"]

# The short list the English set's subset.py drops; Chinese needs none (bigrams of function
# characters have a low IDF anyway).
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were will with "  # noqa: SIM905
    "what which who whom how when where why".split()
)
# Han (with extension A and compatibility ideographs) and kana: scripts written without spaces.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_IS_CJK = re.compile(rf"[{_CJK}]")


def tokenize(text: str) -> list[str]:
    """BM25 terms of ``text``: words (stopwords dropped) and CJK character bigrams.

    >>> tokenize("The iPhone 15 苹果手机")
    ['iphone', '15', '苹果', '果手', '手机']
    """
    terms: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        run = match.group(0)
        if _IS_CJK.match(run):
            terms.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
        elif run not in _STOPWORDS:
            terms.append(run)
    return terms


class Bm25Index:
    """Okapi BM25 (Lucene IDF) over a fixed set of documents; ties are broken by document id.

    Example:
        >>> index = Bm25Index({"d1": "giant panda bear", "d2": "red fox"})
        >>> index.search("panda", k=10)
        ['d1']
    """

    def __init__(self, documents: dict[str, str], *, k1: float = 0.9, b: float = 0.4) -> None:
        if not documents:  # bm25s fails on an empty corpus with "max() arg is an empty sequence"
            raise InputError("BM25 needs at least one document to index, and none was given")
        self._ids = list(documents)
        # Position of each id in sorted order: the tie-breaker, so equal scores order by id.
        self._id_rank = np.empty(len(self._ids), dtype=np.int64)
        self._id_rank[np.argsort(np.array(self._ids, dtype=object), kind="stable")] = np.arange(len(self._ids))
        self._position = {doc_id: i for i, doc_id in enumerate(self._ids)}
        # float64 so that near-equal scores are not turned into ties that then order by id.
        self._model = require("bm25s", "the BM25 first stage").BM25(k1=k1, b=b, method="lucene", dtype="float64")
        self._model.index([tokenize(text) for text in documents.values()], show_progress=False)
        self._vocabulary: dict[str, int] = self._model.vocab_dict

    def scores(self, query: str) -> npt.NDArray[np.float64]:
        """BM25 score of every document for ``query``, in the order the documents were given."""
        terms = [t for t in dict.fromkeys(tokenize(query)) if t in self._vocabulary]
        if not terms:
            return np.zeros(len(self._ids), dtype=np.float64)
        return np.asarray(self._model.get_scores(terms), dtype=np.float64)

    def search(self, query: str, k: int) -> list[str]:
        """The ``k`` best documents that share a term with ``query``, best first."""
        scores = self.scores(query)
        hits = np.flatnonzero(scores > 0)
        order = hits[np.lexsort((self._id_rank[hits], -scores[hits]))][:k]
        return [self._ids[i] for i in order]

    def order(self, query: str, doc_ids: Sequence[str]) -> list[str]:
        """``doc_ids`` (all indexed) sorted by BM25 score for ``query``, best first."""
        scores = self.scores(query)
        return sorted(doc_ids, key=lambda d: (-scores[self._position[d]], d))
