"""Token ids equal the Hugging Face tokenizer's for the same pairs and truncation policy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cases import LONG_QUERY, PAIRS
from conftest import subprocess_env
from crossrank.config import TruncationOptions
from crossrank.engine.tokenizer import PairTokenizer
from reference import flag_inputs


@pytest.fixture(scope="module", params=["xlmr", "bert"])
def tokenizer_dir(request: pytest.FixtureRequest, xlmr_tokenizer_dir: Path, english_model_dir: Path) -> Path:
    return xlmr_tokenizer_dir if request.param == "xlmr" else english_model_dir


@pytest.mark.slow
@pytest.mark.parametrize("max_length", [32, 128, 512])
def test_ids_match_the_flagembedding_policy(tokenizer_dir: Path, max_length: int) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    ours = PairTokenizer.from_pretrained(tokenizer_dir)
    truncation = TruncationOptions(max_length=max_length)
    for query, document in [*PAIRS, (LONG_QUERY, "short document")]:
        encoded_query = ours.encode_query(query, truncation)
        document_ids = ours.encode_documents([document])[0].ids
        pair = ours.build_pair(encoded_query, document_ids, truncation)
        ids, type_ids = flag_inputs(hf, query, document, max_length)
        assert pair.ids == ids, (query[:30], document[:30])
        assert pair.type_ids == type_ids
        assert len(pair.ids) <= max_length


@pytest.mark.slow
def test_ids_match_the_tokenizers_own_pair_encoding(tokenizer_dir: Path) -> None:
    """Where the query is under its cap, HF's own `only_second` pair encoding gives the same ids.

    Batched, as sentence-transformers calls it: a single call `hf(q, "")` drops an empty second text.
    """
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    ours = PairTokenizer.from_pretrained(tokenizer_dir)
    truncation = TruncationOptions(max_length=128)
    for query, document in PAIRS:
        expected = hf([query], [document], truncation="only_second", max_length=128)
        pair = ours.build_pair(
            ours.encode_query(query, truncation), ours.encode_documents([document])[0].ids, truncation
        )
        assert pair.ids == expected["input_ids"][0]
        if "token_type_ids" in expected:
            assert pair.type_ids == expected["token_type_ids"][0]


def test_truncation_accounting(xlmr_pair_tokenizer: PairTokenizer) -> None:
    ours = xlmr_pair_tokenizer
    truncation = TruncationOptions(max_length=64)
    query = ours.encode_query(LONG_QUERY, truncation)
    assert query.truncated
    assert len(query.ids) == 48  # 3/4 of 64
    document = ours.encode_documents(["word " * 100])[0].ids
    pair = ours.build_pair(query, document, truncation)
    assert len(pair.ids) == 64
    assert pair.truncated_tokens == len(document) - (64 - 48 - 4)
    assert not ours.encode_query("short", truncation).truncated


def test_padding_makes_a_rectangular_batch(english_model_dir: Path) -> None:
    ours = PairTokenizer.from_pretrained(english_model_dir)
    truncation = TruncationOptions()
    q = ours.encode_query("query", truncation)
    pairs = [ours.build_pair(q, d.ids, truncation) for d in ours.encode_documents(["a", "a much longer document"])]
    batch = ours.pad(pairs)
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, len(pairs[1].ids))
    assert batch.attention_mask[0].sum() == len(pairs[0].ids)
    assert batch.input_ids[0, len(pairs[0].ids) :].tolist() == [0] * (len(pairs[1].ids) - len(pairs[0].ids))
    assert batch.token_type_ids is not None
    assert batch.token_type_ids[1].tolist() == pairs[1].type_ids


def test_xlmr_batches_carry_no_token_types(xlmr_pair_tokenizer: PairTokenizer) -> None:
    ours = xlmr_pair_tokenizer
    truncation = TruncationOptions()
    q = ours.encode_query("what is panda?", truncation)
    batch = ours.pad([ours.build_pair(q, ours.encode_documents(["hi"])[0].ids, truncation)])
    assert batch.token_type_ids is None
    # <s> q </s></s> d </s>, the ids the XLM-R tokenizer's provenance records for this pair
    assert batch.input_ids[0].tolist() == [0, 2367, 83, 6, 85407, 32, 2, 2, 1274, 2]


def test_unknown_fraction(english_model_dir: Path, xlmr_pair_tokenizer: PairTokenizer) -> None:
    english = PairTokenizer.from_pretrained(english_model_dir)
    multilingual = xlmr_pair_tokenizer
    assert english.unknown_fraction("苹果手机") > 0.5
    assert english.unknown_fraction("apple phone") == 0.0
    assert multilingual.unknown_fraction("苹果手机") == 0.0
    assert english.unknown_fraction("") == 0.0


def _encode_all(tokenizer: PairTokenizer) -> list[tuple[list[int], list[int]]]:
    truncation = TruncationOptions(max_length=128)
    pairs = []
    for query, document in [*PAIRS, (LONG_QUERY, "short document")]:
        ids = tokenizer.encode_documents([document])[0].ids
        pair = tokenizer.build_pair(tokenizer.encode_query(query, truncation), ids, truncation)
        pairs.append((pair.ids, pair.type_ids))
    return pairs


@pytest.mark.slow
def test_a_saved_tokenizer_loads_without_transformers_and_encodes_alike(tokenizer_dir: Path, tmp_path: Path) -> None:
    built = PairTokenizer.from_pretrained(tokenizer_dir, cache_dir=tmp_path)
    (saved,) = tmp_path.glob("*.json")
    again = PairTokenizer.from_pretrained(tokenizer_dir, cache_dir=tmp_path)
    assert _encode_all(again) == _encode_all(built) == _encode_all(PairTokenizer.from_pretrained(tokenizer_dir))
    # A fresh process reads the saved one with `tokenizers` alone: neither transformers nor torch is imported.
    code = (
        "import sys; from pathlib import Path; from crossrank.engine.tokenizer import PairTokenizer; "
        f"PairTokenizer.from_pretrained(Path({str(tokenizer_dir)!r}), cache_dir=Path({str(tmp_path)!r})); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), check=True)
    assert out.stdout.strip() == "[]", out.stderr
    assert list(tmp_path.glob("*.json")) == [saved]


def test_a_changed_tokenizer_file_or_a_damaged_entry_builds_again(english_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(english_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    cache = tmp_path / "cache"
    truncation = TruncationOptions(max_length=32)
    original = PairTokenizer.from_pretrained(folder, cache_dir=cache).encode_query("panda bamboo", truncation).ids
    (first,) = cache.glob("*.json")
    # The same file names with another vocabulary ("panda" and "bamboo" swap ids): a new entry, the new ids.
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["panda"], vocab["bamboo"] = vocab["bamboo"], vocab["panda"]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    swapped = PairTokenizer.from_pretrained(folder, cache_dir=cache).encode_query("panda bamboo", truncation).ids
    assert swapped == original[::-1]
    assert len(list(cache.glob("*.json"))) == 2
    # A damaged entry is built again (and saved again), not an error.
    first.write_text("{not json")
    shutil.copy(english_model_dir / "tokenizer.json", folder / "tokenizer.json")
    restored = PairTokenizer.from_pretrained(folder, cache_dir=cache).encode_query("panda bamboo", truncation).ids
    assert restored == original
    assert json.loads(first.read_text())["format"] == 2
