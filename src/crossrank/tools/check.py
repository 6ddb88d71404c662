"""The smoke test a freshly deployed box needs: does the model rank relevant above irrelevant?"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from crossrank.engine.tokenizer import UNREADABLE_SHARE
from crossrank.reranker import Reranker

__all__ = ["CHECK_CASES", "CheckReport", "PairCheck", "run_check"]

# (language, query, relevant document, irrelevant document): clear-cut cases any working
# reranker gets right; the keyword traps belong to the demo.
CHECK_CASES: tuple[tuple[str, str, str, str], ...] = (
    ("zh", "大熊猫吃什么", "大熊猫主要以竹子为食，每天要吃十几公斤竹子。", "今天股市大幅上涨，投资者情绪高涨。"),
    ("zh", "北京有多少人口", "北京市常住人口约为2189万人。", "这家餐厅的红烧肉非常好吃。"),
    (
        "en",
        "how many people live in berlin",
        "Berlin has a population of 3.5 million people.",
        "Paris is the capital of France.",
    ),
    ("en", "what is a panda?", "The giant panda is a bear species endemic to China.", "hi"),
)


@dataclass(frozen=True, slots=True)
class PairCheck:
    """One relevant/irrelevant comparison."""

    language: str
    query: str
    relevant: str
    irrelevant: str
    relevant_score: float
    irrelevant_score: float

    @property
    def passed(self) -> bool:
        return self.relevant_score > self.irrelevant_score


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``crossrank check`` found."""

    model: str
    device: str
    dtype: str
    max_length: int
    load_seconds: float
    ms_per_pair: float
    checks: list[PairCheck] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def fix(self) -> str | None:
        """What to do when the check failed."""
        if not self.checks:
            return "the model's vocabulary reads none of the check languages; use a reranker for zh or en"
        if not self.passed:
            return (
                "the model ranks irrelevant text above relevant text: make sure it is a trained reranker "
                "(not a base or embedding model) and that its files downloaded completely"
            )
        return None


def run_check(reranker: Reranker) -> CheckReport:
    """Score the check cases the model's vocabulary can read and time them."""
    skipped: dict[str, str] = {}
    for language in dict.fromkeys(case[0] for case in CHECK_CASES):
        text = "".join("".join(case[1:]) for case in CHECK_CASES if case[0] == language)
        unknown = reranker.unknown_fraction(text)
        if unknown >= UNREADABLE_SHARE:  # a language the model cannot read is skipped, not judged
            skipped[language] = f"{unknown:.0%} of its tokens are unknown to this model's vocabulary"
    cases = [case for case in CHECK_CASES if case[0] not in skipped]
    pairs = [(q, d) for _, q, rel, irr in cases for d in (rel, irr)]
    reranker.score(pairs[:1])  # warm-up: first-call allocations are not per-pair latency
    started = time.perf_counter()
    scores = reranker.score(pairs)
    elapsed = time.perf_counter() - started
    checks = [
        PairCheck(lang, q, rel, irr, scores[2 * i], scores[2 * i + 1]) for i, (lang, q, rel, irr) in enumerate(cases)
    ]
    return CheckReport(
        model=reranker.model,
        device=reranker.device,
        dtype=reranker.dtype,
        max_length=reranker.truncation.max_length,
        load_seconds=reranker.load_seconds,
        ms_per_pair=1000 * elapsed / max(len(pairs), 1),
        checks=checks,
        skipped=skipped,
    )
