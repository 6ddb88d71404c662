"""Text cases shared by the parity and tokenizer tests: Chinese, mixed, emoji, long documents."""

from __future__ import annotations

from pathlib import Path

from crossrank.evaluate.data import load_beir

LONG_EN = " ".join(
    f"Sentence {i} talks about pandas, bamboo forests, mountains in Sichuan and conservation work." for i in range(120)
)
LONG_ZH = "大熊猫是中国特有的熊科动物，主要栖息在四川、陕西和甘肃的山区，以竹子为主要食物。" * 40

PAIRS: list[tuple[str, str]] = [
    ("what is panda?", "hi"),
    ("what is panda?", "The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China."),
    ("how many people live in berlin", "Berlin has a population of 3.5 million registered inhabitants."),
    ("苹果手机", "iPhone 15 正式发布"),
    ("苹果手机", "苹果是一种水果，富含维生素"),
    ("大熊猫吃什么", "大熊猫主要以竹子为食。"),
    ("iPhone 价格 price", "The new iPhone 15 售价 999 美元 in the US 🇺🇸"),
    ("emoji 🐼 query", "🐼🐼 pandas are cute 😍🎋 and eat bamboo"),
    ("", "an empty query"),
    ("an empty document", ""),
    ("whitespace   runs\tand\nnewlines", "  leading and trailing   spaces \t\n"),
    ("panda conservation", LONG_EN),
    ("大熊猫的栖息地", LONG_ZH),
    ("mixed 熊猫 long", LONG_EN[:3000] + LONG_ZH[:1500]),
]

LONG_QUERY = "panda " * 600


def judged_pairs(folder: Path, queries: int, docs: int) -> list[list[str]]:
    """(query, title + text) pairs of a BEIR folder's first ``queries`` queries and their first ``docs`` candidates."""
    dataset = load_beir(folder)
    assert dataset.candidates is not None, f"{folder} has no candidates.jsonl"
    chosen = list(dataset.candidates.items())[:queries]
    return [[dataset.queries[query], dataset.documents[doc]] for query, ids in chosen for doc in ids[:docs]]
