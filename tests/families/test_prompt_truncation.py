"""A decoder reranker's prompt keeps its fixed parts whatever is cut: only the document (then the query) loses tokens.

sentence-transformers once cut the end of Qwen3-Reranker's template with ``max_length``: the model then read no
question and its scores were noise. Here every pair the model would read is recorded (a fake backend behind the
real tokenizer and scorer) and checked: the prompt's start, the query's labels, the document's label (again before
every later window of a long document) and the whole suffix are there, for each family and both cut directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from tiny_models import build_gemma_like_tokenizer

from crossrank import Reranker
from crossrank.backends.base import EncodedBatch, WrappedBackend
from crossrank.backends.fake import FakeBackend
from crossrank.config import BatchingOptions, ChunkingOptions, PromptOptions, TruncationOptions
from crossrank.engine.scorer import Scorer, ScoreRequest
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.errors import InputTooLongError
from crossrank.families import family_named

FAMILIES = ["qwen3-reranker", "mxbai-rerank-v2", "bge-reranker-gemma"]
LONG_DOCUMENT = " ".join(f"the giant panda {i} eats bamboo in the mountain forest of china." for i in range(60))
LONG_QUERY = " ".join(f"where does the giant panda {i} live" for i in range(60))
# Room for mxbai-rerank-v2's long fixed prompt (202 ids in the small test tokenizer) and some document.
MAX_LENGTH = 320


class Recorder(WrappedBackend):
    """The fake backend, keeping each pair's real ids as the model would read them."""

    def __init__(self) -> None:
        super().__init__(FakeBackend())
        self.rows: list[list[int]] = []

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        for row in range(batch.size):
            self.rows.append(batch.input_ids[row, : int(batch.attention_mask[row].sum())].tolist())
        return self.inner.forward(batch)


@pytest.fixture(scope="module")
def tokenizers(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, PairTokenizer]:
    """Each family's prompt on a tokenizer of its kind (mxbai-rerank-v2 is a Qwen model too)."""
    gemma = tmp_path_factory.mktemp("gemma-tokenizer")
    build_gemma_like_tokenizer(gemma, bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>")
    return {
        name: PairTokenizer.from_pretrained(gemma if "gemma" in name else tiny_qwen3_dir, family=family_named(name))
        for name in FAMILIES
    }


def _read(
    tokenizer: PairTokenizer,
    query: str,
    document: str,
    *,
    direction: str = "right",
    aggregate: str = "first",
    instruction: str | None = None,
) -> list[list[int]]:
    """The ids of every pair the model reads for one (query, document)."""
    recorder = Recorder()
    truncation = TruncationOptions(max_length=MAX_LENGTH, truncation_direction=direction)  # type: ignore[arg-type]
    chunking = ChunkingOptions(aggregate=aggregate)
    request = ScoreRequest(query, [document], truncation, chunking, prompt=PromptOptions(instruction=instruction))
    Scorer(tokenizer, recorder).score([request], BatchingOptions())
    return recorder.rows


def _ids(tokenizer: PairTokenizer, pieces: Sequence[str]) -> list[int]:
    """Each piece tokenised on its own, as upstream does, joined."""
    return [i for piece in pieces for i in tokenizer.tokenize([piece], add_special_tokens=False)[0].ids]


def _check_template(tokenizer: PairTokenizer, rows: list[list[int]], instruction: str | None = None) -> None:
    """Every row: the whole prompt before the query, the query's labels and the document's label after it, the
    whole suffix at its end, and no more than max_length ids."""
    prompt = tokenizer.family.prompt(instruction)
    suffix = _ids(tokenizer, prompt.suffix)
    start = _ids(tokenizer, prompt.prefix)
    if prompt.bos:
        start = [tokenizer.tokenize([""], add_special_tokens=True)[0].ids[0], *start]
    # Qwen3-Reranker's document label is the space after "<Document>:", tokenised into the document's first word;
    # a later window has no such word to carry it.
    joint = prompt.query[1] + "".join(prompt.middle) + prompt.document.strip()
    for row in rows:
        assert len(row) <= MAX_LENGTH
        assert row[: len(start)] == start
        assert row[-len(suffix) :] == suffix
        text = tokenizer.decode([row], skip_special_tokens=False)[0]
        assert text.find(prompt.query[0]) < text.find(joint)  # the query between its labels
        assert joint in text, f"the query's end or the document's label was cut: {text!r}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("direction", ["right", "left"])
def test_a_cut_document_keeps_the_whole_template(
    tokenizers: dict[str, PairTokenizer], family: str, direction: str
) -> None:
    tokenizer = tokenizers[family]
    (row,) = _read(tokenizer, "what do pandas eat?", LONG_DOCUMENT, direction=direction)
    assert len(row) == MAX_LENGTH  # cut, to the last token of room
    _check_template(tokenizer, [row])
    text = tokenizer.decode([row], skip_special_tokens=False)[0]
    # The kept end of the document is the one asked for.
    assert ("panda 0 " in text) == (direction == "right")
    assert ("panda 59 " in text) == (direction == "left")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_window_of_a_long_document_gets_the_template_and_the_document_label(
    tokenizers: dict[str, PairTokenizer], family: str
) -> None:
    tokenizer = tokenizers[family]
    rows = _read(tokenizer, "what do pandas eat?", LONG_DOCUMENT, aggregate="max")
    assert len(rows) > 2
    _check_template(tokenizer, rows)
    # Each window reads on from where the one before it started: they cover the document in order.
    texts = tokenizer.decode(rows, skip_special_tokens=False)
    firsts = [next(i for i in range(60) if f"panda {i} " in text) for text in texts]
    assert firsts == sorted(firsts)
    assert firsts[0] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_query_over_its_cap_loses_its_end_not_the_template(tokenizers: dict[str, PairTokenizer], family: str) -> None:
    tokenizer = tokenizers[family]
    (row,) = _read(tokenizer, LONG_QUERY, "pandas eat bamboo.", instruction="Judge relevance")
    _check_template(tokenizer, [row], "Judge relevance")
    text = tokenizer.decode([row], skip_special_tokens=False)[0]
    assert "panda 0 " in text
    assert "panda 59 " not in text
    assert "pandas" in text  # the document keeps room (the query took at most its cap)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_instruction_too_long_for_max_length_names_the_instruction(
    tokenizers: dict[str, PairTokenizer], family: str
) -> None:
    with pytest.raises(InputTooLongError, match="instruction") as raised:
        _read(tokenizers[family], "what do pandas eat?", "bamboo", instruction="judge the passage " * 60)
    assert raised.value.field == "instruction"


def test_the_reranker_refuses_an_instruction_that_leaves_no_room(tiny_qwen3_dir: Path) -> None:
    with Reranker.from_backend(FakeBackend(), str(tiny_qwen3_dir)) as reranker:
        assert reranker.family.name == "qwen3-reranker"
        with pytest.raises(InputTooLongError, match="instruction"):
            reranker.rerank("q", ["d"], max_length=64, instruction="judge the passage " * 30)
