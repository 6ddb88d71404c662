"""PairTokenizer: (query, document) text to token ids exactly as the model's own tokenizer does it.

The Rust tokenizer from ``tokenizer.json`` does the work. A cross-encoder's pair layout (``<s> q </s></s> d </s>``
for XLM-R, ``[CLS] q [SEP] d [SEP]`` for BERT) is read once from the tokenizer's own post-processor, so any
model's template is honoured without a table of model types; a decoder reranker's layout is its family's prompt
(``crossrank.families``), whose pieces are tokenised on their own as upstream does. The query is encoded once
per call and cut to its cap; each document is cut to the room left, never the template. The Rust tokenizer is
only read, never reconfigured, so one instance is safe to share between threads ("Already borrowed" comes from
changing truncation/padding settings per call, which this class never does).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Encoding, Tokenizer

from crossrank.backends.base import EncodedBatch, TokenHead
from crossrank.config import TOKENIZER_INPUTS, TruncationOptions
from crossrank.errors import InputTooLongError, UnsupportedModelError
from crossrank.families import CROSS_ENCODER, Family

__all__ = ["UNREADABLE_SHARE", "EncodedPair", "EncodedQuery", "PairTokenizer", "TokenizedText", "replace_surrogates"]

_log = logging.getLogger(__name__)

# A text at least this share of whose tokens are unknown to the vocabulary cannot be judged by the model
# (e.g. Chinese for an English-only model): its score is noise, so it is counted and warned about.
UNREADABLE_SHARE = 0.3

_SAVED_FORMAT = 2
# Prompts kept per instruction (a server sees few distinct instructions; each costs a few hundred ids).
_PROMPTS_KEPT = 64

# A surrogate code point in a Python str is always unpaired (JSON "\\ud83d" decodes to one) and the
# Rust tokenizer rejects it; U+FFFD keeps one code point per code point, so character offsets hold.
_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    """``text`` with lone surrogates as U+FFFD (what the tokenizer scores, and what answers echo)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


class TokenizedText(Protocol):
    """A document's ids and each id's character ``[start, end)`` in the document (a ``tokenizers.Encoding``)."""

    @property
    def ids(self) -> list[int]: ...

    @property
    def offsets(self) -> list[tuple[int, int]]: ...


@dataclass(frozen=True, slots=True)
class _Labelled:
    """A document tokenised after its prompt label (``"B: "``), with offsets into the document itself."""

    encoding: Encoding
    shift: int

    @property
    def ids(self) -> list[int]:
        ids: list[int] = self.encoding.ids
        return ids

    @property
    def offsets(self) -> list[tuple[int, int]]:
        return [(max(a - self.shift, 0), max(b - self.shift, 0)) for a, b in self.encoding.offsets]


@dataclass(frozen=True, slots=True)
class _Template:
    """The fixed tokens around and between the two texts, with their segment ids.

    A decoder prompt's template also keeps the texts tokenised with the query (``query_text``: before, after; their
    tokens alone are ``query_labels``) and with the document (``document_label``, ``"B: "``), whose ids ``label``
    are put again before a window that does not start the document.
    """

    prefix: tuple[list[int], list[int]]
    middle: tuple[list[int], list[int]]
    suffix: tuple[list[int], list[int]]
    query_type: int
    document_type: int
    label: list[int] = field(default_factory=list)
    query_text: tuple[str, str] = ("", "")
    query_labels: int = 0
    document_label: str = ""

    @property
    def special_tokens(self) -> int:
        return len(self.prefix[0]) + len(self.middle[0]) + len(self.suffix[0])


@dataclass(frozen=True, slots=True)
class EncodedQuery:
    """A query's ids as they enter every pair, already cut to its cap, with the template of its request.

    Attributes:
        ids: the query's tokens (a decoder prompt's query piece: with its labels and instruction).
        tokens: the query's own tokens, uncut.
        kept: the query's own tokens kept.
        template: the fixed tokens around it (for a decoder, its instruction's prompt).
    """

    ids: list[int]
    tokens: int
    kept: int
    template: _Template

    @property
    def truncated(self) -> bool:
        """Whether the cap cut the query."""
        return self.tokens > self.kept

    @property
    def overhead(self) -> int:
        """Tokens every pair of this query holds besides its document."""
        return len(self.ids) + self.template.special_tokens


@dataclass(frozen=True, slots=True)
class EncodedPair:
    """One model input: ids and segment ids with special tokens, what the cut removed, and how many leading ids
    every pair of its query shares."""

    ids: list[int]
    type_ids: list[int]
    truncated_tokens: int
    shared: int = 0


def _read_template(tokenizer: Tokenizer) -> _Template:
    query = tokenizer.encode("query", add_special_tokens=False)
    document = tokenizer.encode("a document", add_special_tokens=False)
    pair = tokenizer.post_process(query, document, add_special_tokens=True)
    ids, types, special = pair.ids, pair.type_ids, pair.special_tokens_mask
    q_len, d_len = len(query.ids), len(document.ids)
    q_start = special.index(0)
    d_start = q_start + q_len + special[q_start + q_len :].index(0)
    d_end = d_start + d_len
    if (
        ids[q_start : q_start + q_len] != query.ids
        or ids[d_start:d_end] != document.ids
        or any(special[q_start : q_start + q_len])
        or any(special[d_start:d_end])
        or not all(special[:q_start] + special[q_start + q_len : d_start] + special[d_end:])
    ):
        raise UnsupportedModelError(
            "the tokenizer's pair template is not <specials> query <specials> document <specials>",
            fix="use a cross-encoder whose tokenizer builds ordinary sentence pairs",
        )
    return _Template(
        prefix=(ids[:q_start], types[:q_start]),
        middle=(ids[q_start + q_len : d_start], types[q_start + q_len : d_start]),
        suffix=(ids[d_end:], types[d_end:]),
        query_type=types[q_start],
        document_type=types[d_start],
    )


class PairTokenizer:
    """Encodes (query, document) pairs with FlagEmbedding's truncation policy (see ``TruncationOptions``)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        pad_token_id: int,
        unk_token_id: int | None,
        with_token_types: bool,
        bos_token_id: int | None = None,
        family: Family = CROSS_ENCODER,
    ) -> None:
        # Settings left on the Rust tokenizer would apply to every encode; the cut is done here.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.family = family
        self._template = None if family.decoder else _read_template(tokenizer)
        self._prompts: dict[str | None, _Template] = {}
        self._pad_token_id = pad_token_id
        self._unk_token_id = unk_token_id
        self._bos_token_id = bos_token_id
        self._with_token_types = with_token_types and not family.decoder

    @classmethod
    def from_pretrained(
        cls,
        path: Path,
        *,
        trust_remote_code: bool = False,
        cache_dir: Path | None = None,
        family: Family = CROSS_ENCODER,
    ) -> PairTokenizer:
        """Load the fast tokenizer of a model folder, as transformers builds it.

        transformers may rebuild parts of ``tokenizer.json`` (XLM-R's normalizer and pre-tokenizer), and
        loading it imports torch. With ``cache_dir``, the tokenizer it built is kept there, keyed by the
        folder's tokenizer files and the library versions, and later loads read it with ``tokenizers``
        alone: an ONNX process then never imports torch (about 0.3 GB less memory for XLM-R).
        """
        saved = None if cache_dir is None or trust_remote_code else cache_dir / f"{_saved_key(path)}.json"
        if saved is not None and saved.is_file():
            try:
                return cls._load_saved(saved, family)
            except Exception as exc:  # a damaged cache entry (tokenizers' errors share no base class)
                _log.warning("ignoring the saved tokenizer %s (%s); building it again", saved, exc)
        tokenizer = cls._build(path, trust_remote_code=trust_remote_code, family=family)
        if saved is not None:
            tokenizer._save(saved)
        return tokenizer

    @classmethod
    def _load_saved(cls, saved: Path, family: Family) -> PairTokenizer:
        payload = json.loads(saved.read_text(encoding="utf-8"))
        if payload["format"] != _SAVED_FORMAT:
            raise ValueError(f"format {payload['format']}")
        return cls(
            Tokenizer.from_str(payload["tokenizer"]),
            pad_token_id=int(payload["pad_token_id"]),
            unk_token_id=payload["unk_token_id"],
            with_token_types=bool(payload["with_token_types"]),
            bos_token_id=payload["bos_token_id"],
            family=family,
        )

    def _save(self, saved: Path) -> None:
        """Keep this tokenizer in ``saved`` (written whole or not at all; a failure only costs speed)."""
        payload = {
            "format": _SAVED_FORMAT,
            "tokenizer": self._tokenizer.to_str(),
            "pad_token_id": self._pad_token_id,
            "unk_token_id": self._unk_token_id,
            "bos_token_id": self._bos_token_id,
            "with_token_types": self._with_token_types,
        }
        try:
            saved.parent.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(dir=saved.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(payload, handle)
                os.replace(partial, saved)
            except BaseException:
                Path(partial).unlink(missing_ok=True)
                raise
        except OSError as exc:
            _log.info("could not save the tokenizer to %s: %s", saved, exc)

    @classmethod
    def _build(cls, path: Path, *, trust_remote_code: bool, family: Family) -> PairTokenizer:
        from transformers import AutoTokenizer

        try:
            hf_tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UnsupportedModelError(
                f"the tokenizer in {path} could not be loaded: {exc}",
                fix="make sure tokenizer.json (or the tokenizer's vocabulary files) are in the model folder",
            ) from exc
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if not isinstance(backend, Tokenizer):
            raise UnsupportedModelError(
                f"the tokenizer in {path} has no fast (Rust) implementation",
                fix="use a model folder with tokenizer.json",
            )
        pad, unk, bos = hf_tokenizer.pad_token_id, hf_tokenizer.unk_token_id, hf_tokenizer.bos_token_id
        return cls(
            backend,
            pad_token_id=0 if pad is None else int(pad),
            unk_token_id=None if unk is None else int(unk),
            with_token_types="token_type_ids" in hf_tokenizer.model_input_names,
            bos_token_id=None if bos is None else int(bos),
            family=family,
        )

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def head(self) -> TokenHead | None:
        """The family's score head with this tokenizer's ids (each token's first id, as upstream reads it);
        ``None`` for a cross-encoder."""
        head = self.family.head
        if head is None:
            return None
        positive = self._ids(head.positive)
        negative = None if head.negative is None else self._ids(head.negative)
        if not positive or negative == []:
            raise UnsupportedModelError(
                f"the {self.family.name} score tokens ({head.positive!r}, {head.negative!r}) are not in this "
                "tokenizer's vocabulary",
                fix="use the tokenizer that ships with the model",
            )
        return TokenHead(positive[0], None if negative is None else negative[0])

    def template(self, instruction: str | None) -> _Template:
        """The fixed tokens of a pair: the tokenizer's pair template, or the family's prompt for ``instruction``."""
        if self._template is not None:
            return self._template
        template = self._prompts.get(instruction)
        if template is None:
            prompt = self.family.prompt(instruction)
            if prompt.bos and self._bos_token_id is None:
                raise UnsupportedModelError(
                    f"the {self.family.name} prompt starts with the beginning-of-sequence token, but this "
                    "tokenizer has none",
                    fix="use the tokenizer that ships with the model (tokenizer_config.json names bos_token)",
                )
            prefix = [self._bos_token_id] if prompt.bos and self._bos_token_id is not None else []
            prefix += [i for piece in prompt.prefix for i in self._ids(piece)]
            middle = [i for piece in prompt.middle for i in self._ids(piece)]
            suffix = [i for piece in prompt.suffix for i in self._ids(piece)]
            zeros = [0] * max(len(prefix), len(middle), len(suffix))
            template = _Template(
                prefix=(prefix, zeros[: len(prefix)]),
                middle=(middle, zeros[: len(middle)]),
                suffix=(suffix, zeros[: len(suffix)]),
                query_type=0,
                document_type=0,
                label=self._ids(prompt.document) if prompt.document.strip() else [],
                query_text=prompt.query,
                query_labels=len(self._ids(prompt.query_text(""))),
                document_label=prompt.document,
            )
            if len(self._prompts) >= _PROMPTS_KEPT:
                # Another thread may have dropped the same oldest entry already.
                self._prompts.pop(next(iter(self._prompts)), None)
            self._prompts[instruction] = template
        return template

    def unknown_fraction(self, text: str) -> float:
        """Share of ``text``'s tokens that the vocabulary cannot represent (0 for empty text)."""
        return self.unknown_share(self._tokenizer.encode(replace_surrogates(text), add_special_tokens=False).ids)

    def unknown_share(self, ids: Sequence[int]) -> float:
        """Share of ``ids`` that are the unknown token (0 for none)."""
        if not ids or self._unk_token_id is None:
            return 0.0
        return list(ids).count(self._unk_token_id) / len(ids)

    def unreadable(self, ids: Sequence[int]) -> bool:
        """Whether a text of these ids is mostly beyond the vocabulary (``UNREADABLE_SHARE``): not judged, guessed."""
        return self.unknown_share(ids) >= UNREADABLE_SHARE

    def query_cap(self, truncation: TruncationOptions, instruction: str | None = None) -> int:
        """The query's token cap (never so long that no document token fits). A decoder prompt's default cap is 3/4
        of what its template leaves, as upstream implementations take 3/4 of a budget without their template."""
        template = self.template(instruction)
        room = truncation.max_length - template.special_tokens - template.query_labels - 1
        if room < 1:
            raise InputTooLongError(
                "instruction",
                truncation.max_length - room,
                truncation.max_length - 2,
                reason=f"for the {self.family.name} prompt and its instruction in max_length {truncation.max_length}",
                fix="shorten the instruction or raise max_length",
            )
        if self.family.decoder and truncation.query_max_length is None:
            return max(room * 3 // 4, 1)
        return min(truncation.query_cap, room)

    def encode_query(self, query: str, truncation: TruncationOptions, instruction: str | None = None) -> EncodedQuery:
        """Tokens of the query, cut to its cap at the end ``truncation.truncation_direction`` names (with a
        decoder family's prompt for ``instruction``: ``None`` is the family's default)."""
        cap = self.query_cap(truncation, instruction)
        query = replace_surrogates(query)
        encoding = self._tokenizer.encode(query, add_special_tokens=False)
        ids = encoding.ids
        right = truncation.truncation_direction == "right"
        kept = ids if len(ids) <= cap else ids[:cap] if right else ids[len(ids) - cap :]
        template = self.template(instruction)
        if self.family.decoder:
            # The query is tokenised inside its piece of the prompt, as upstream does; a cut is made on the text,
            # at its kept tokens' characters.
            if len(kept) < len(ids):
                offsets = encoding.offsets
                query = query[: offsets[cap - 1][1]] if right else query[offsets[len(ids) - cap][0] :]
            before, after = template.query_text
            kept = self._ids(f"{before}{query}{after}")
            return EncodedQuery(ids=kept, tokens=len(ids), kept=min(len(ids), cap), template=template)
        return EncodedQuery(ids=kept, tokens=len(ids), kept=len(kept), template=template)

    def document_room(self, query: EncodedQuery, truncation: TruncationOptions) -> int:
        """Document tokens that fit beside ``query`` in one pair (at least 1)."""
        return max(truncation.max_length - query.overhead, 1)

    def encode_documents(self, documents: Sequence[str]) -> Sequence[TokenizedText]:
        """Encode documents in parallel (Rust threads), without special tokens and uncut (a decoder family's
        document label, such as ``"B: "``, tokenised with the document's start as upstream does)."""
        texts = [replace_surrogates(d) for d in documents]
        if not self.family.decoder:
            encodings: list[Encoding] = self._tokenizer.encode_batch(texts, add_special_tokens=False)
            return encodings
        label = self.template(None).document_label
        encoded = self._tokenizer.encode_batch([label + text for text in texts], add_special_tokens=False)
        return [_Labelled(encoding, len(label)) for encoding in encoded]

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to this, exclusive (added tokens included)."""
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def tokenize(self, texts: Sequence[str], *, add_special_tokens: bool) -> list[Encoding]:
        """Each text encoded alone and uncut (TEI's ``/tokenize``), with the special tokens if asked."""
        texts = [replace_surrogates(t) for t in texts]
        return self._tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        """The text of each sequence of token ids (TEI's ``/decode``)."""
        return list(self._tokenizer.decode_batch([list(i) for i in ids], skip_special_tokens=skip_special_tokens))

    def build_pair(
        self, query: EncodedQuery, document: Sequence[int], truncation: TruncationOptions, *, continued: bool = False
    ) -> EncodedPair:
        """Put the template around a query and a document (a window of it that does not start the document when
        ``continued``), cutting the document to fit."""
        t = query.template
        room = self.document_room(query, truncation)
        kept = list(document[:room])
        label: list[int] = []
        if continued and t.label:
            # The document's label was tokenised with its start; a later window gets it again, in its own room.
            label, kept = t.label, kept[max(len(t.label) + len(kept) - room, 0) :]
        text = label + kept
        ids = t.prefix[0] + query.ids + t.middle[0] + text + t.suffix[0]
        type_ids = (
            t.prefix[1] + [t.query_type] * len(query.ids) + t.middle[1] + [t.document_type] * len(text) + t.suffix[1]
        )
        return EncodedPair(
            ids=ids,
            type_ids=type_ids,
            truncated_tokens=len(document) - len(kept),
            shared=len(t.prefix[0]) + len(query.ids) + len(t.middle[0]),
        )

    def pad(self, pairs: Sequence[EncodedPair]) -> EncodedBatch:
        """Right-pad pairs into one int64 batch."""
        width = max(len(p.ids) for p in pairs)
        input_ids = np.full((len(pairs), width), self._pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(pairs), width), dtype=np.int64)
        token_type_ids = np.zeros((len(pairs), width), dtype=np.int64) if self._with_token_types else None
        for row, pair in enumerate(pairs):
            n = len(pair.ids)
            input_ids[row, :n] = pair.ids
            attention_mask[row, :n] = 1
            if token_type_ids is not None:
                token_type_ids[row, :n] = pair.type_ids
        # A decoder's shared prefix can be computed once per query (attention is causal); an encoder's cannot.
        shared = np.array([p.shared for p in pairs], dtype=np.int64) if self.family.decoder else None
        return EncodedBatch(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, shared_prefix=shared
        )


def _saved_key(path: Path) -> str:
    """sha256 of the folder's tokenizer inputs, what config.json says of the tokenizer, and the libraries' versions."""
    digest = hashlib.sha256()
    for library in ("transformers", "tokenizers"):
        digest.update(f"{library}=={importlib.metadata.version(library)}\n".encode())
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict):
        # Only what picks the tokenizer class: models of one family with other shapes share an entry.
        digest.update(json.dumps([config.get("model_type"), config.get("tokenizer_class")]).encode())
    for name in TOKENIZER_INPUTS:
        file = path / name
        if file.is_file():
            digest.update(f"{name}\n".encode())
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()[:32]
