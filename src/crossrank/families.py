"""Model families: how a model turns (instruction, query, document) into token ids and its output into one logit.

The classic **cross-encoder** reads the pair through its tokenizer's own pair template and gives one logit.
A **decoder reranker** (a causal language model) reads a prompt with slots for the instruction, the query and the
document, and its score is read from its next-token logits at the last position: the logit of a "yes" token, or
"yes" minus "no" (whose sigmoid is the softmax of the two), or a layer-wise model's head at a chosen layer.

Each family here is written from its upstream implementation (named in its ``source``), so that scores match it.
The engine builds token ids from a family's ``Prompt`` without knowing which family it is; a backend reads the
family's ``ScoreHead``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crossrank.errors import ConfigError, UnsupportedModelError

__all__ = [
    "AUTO",
    "CROSS_ENCODER",
    "FAMILIES",
    "Family",
    "Prompt",
    "ScoreHead",
    "detect_family",
    "family_named",
]

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class ScoreHead:
    """How a decoder's output at the last real position becomes one logit.

    Attributes:
        positive: the token whose logit says "relevant" ("yes", "Yes", "1").
        negative: the token whose logit is subtracted ("no", "0"); ``None`` keeps the positive logit alone.

    A layer-wise model reads its cutoff layer's own score head instead (``ModelSpec.cutoff_layer``; its last layer
    by default, as upstream).
    """

    positive: str
    negative: str | None = None


@dataclass(frozen=True, slots=True)
class Prompt:
    """A decoder reranker's input for one instruction, as texts; each piece is tokenised on its own, as upstream
    does, and the pieces' ids are joined in this order::

        [bos] prefix... query[0]+query+query[1] middle... document_label+document suffix...

    Attributes:
        prefix: texts before the query (a system prompt, a chat turn's start).
        query: the texts tokenised together with the query, before and after it (instruction filled in).
        middle: texts between the query and the document.
        document: the text tokenised together with the document, before it (``"B: "``): part of the
            document's first window; later windows of a long document get it again on its own.
        suffix: texts after the document (the question, the assistant turn's start).
        bos: starts with the tokenizer's beginning-of-sequence token.
    """

    prefix: tuple[str, ...]
    query: tuple[str, str]
    middle: tuple[str, ...]
    document: str
    suffix: tuple[str, ...]
    bos: bool = False

    def query_text(self, query: str) -> str:
        """The query's piece with ``query`` in it."""
        return f"{self.query[0]}{query}{self.query[1]}"


@dataclass(frozen=True, slots=True)
class Family:
    """One way of scoring (see the module's docstring).

    Attributes:
        name: what ``family=`` takes.
        source: the upstream implementation its prompt and score follow.
        head: how the logit is read (``None``: a sequence classifier's own one-label head).
        default_instruction: the instruction used when a call gives none (``None``: the family takes none).
        names: lowercase fragments of hub ids or folder names that identify the family.
        architectures: the ``config.json`` architectures it runs.
        own_architecture: no plain language model has its architectures, so a model of one is of this family
            whatever its name.
    """

    name: str
    source: str
    head: ScoreHead | None
    default_instruction: str | None
    names: tuple[str, ...]
    architectures: tuple[str, ...]
    own_architecture: bool = False

    @property
    def decoder(self) -> bool:
        """Whether this is a decoder (prompt) family."""
        return self.head is not None

    @property
    def takes_instruction(self) -> bool:
        """Whether an instruction changes this family's input."""
        return self.default_instruction is not None

    def prompt(self, instruction: str | None) -> Prompt:
        """The prompt for ``instruction`` (``None``: the family's default)."""
        if self.head is None:
            raise ValueError(f"{self.name} reads pairs through its tokenizer, not a prompt")
        return _PROMPTS[self.name](instruction if instruction is not None else self.default_instruction or "")


# --- The prompts, as each upstream builds them. ---

# FlagEmbedding 1.4.2, inference/reranker/decoder_only/base.py (FlagLLMReranker) and layerwise.py.
_BGE_INSTRUCTION = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)


def _bge_prompt(instruction: str) -> Prompt:
    return Prompt(prefix=(), query=("A: ", ""), middle=("\n",), document="B: ", suffix=("\n", instruction), bos=True)


# Qwen/Qwen3-Reranker-0.6B's model card (also what sentence-transformers' CrossEncoder runs for it).
_QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
_QWEN3_SYSTEM = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
_QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def _qwen3_prompt(instruction: str) -> Prompt:
    # Upstream tokenises "<Instruct>: …\n<Query>: …\n<Document>: {doc}" as one text; Qwen's pre-tokenizer always
    # splits after ">:", so the query's piece and " " + document give the same ids.
    query = (f"<Instruct>: {instruction}\n<Query>: ", "\n<Document>:")
    return Prompt(prefix=(_QWEN3_SYSTEM,), query=query, middle=(), document=" ", suffix=(_QWEN3_SUFFIX,))


# mixedbread-ai's mxbai-rerank package (MxbaiRerankV2).
_MXBAI_INSTRUCTION = ""
_MXBAI_SYSTEM = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
_MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
    "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)


def _mxbai_prompt(instruction: str) -> Prompt:
    lines = f"instruction: {instruction}\n" if instruction else ""
    return Prompt(
        prefix=(_MXBAI_SYSTEM,),
        query=(f"{lines}query: ", ""),
        middle=("\n",),
        document="document: ",
        suffix=("\n", _MXBAI_TASK, "<|im_end|>\n<|im_start|>assistant\n"),
    )


_PROMPTS = {
    "bge-reranker-gemma": _bge_prompt,
    "bge-reranker-minicpm-layerwise": _bge_prompt,
    "qwen3-reranker": _qwen3_prompt,
    "mxbai-rerank-v2": _mxbai_prompt,
}

CROSS_ENCODER = Family(
    name="cross-encoder",
    source="the tokenizer's own pair template and the model's one-label classification head",
    head=None,
    default_instruction=None,
    names=(),
    architectures=(),
)

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        CROSS_ENCODER,
        Family(
            name="bge-reranker-gemma",
            source="FlagEmbedding FlagLLMReranker (BAAI/bge-reranker-v2-gemma)",
            head=ScoreHead("Yes"),
            default_instruction=_BGE_INSTRUCTION,
            names=("bge-reranker-v2-gemma",),
            architectures=("GemmaForCausalLM",),
        ),
        Family(
            name="bge-reranker-minicpm-layerwise",
            source="FlagEmbedding LayerWiseFlagLLMReranker (BAAI/bge-reranker-v2-minicpm-layerwise)",
            # Its score is a layer's own head (the token is the answer its prompt asks for, not read); the
            # architecture is run natively (crossrank.backends.minicpm), not by the code shipped with it.
            head=ScoreHead("Yes"),
            default_instruction=_BGE_INSTRUCTION,
            names=("bge-reranker-v2-minicpm-layerwise", "minicpm-layerwise"),
            architectures=("LayerWiseMiniCPMForCausalLM",),
            own_architecture=True,
        ),
        Family(
            name="qwen3-reranker",
            source="Qwen3-Reranker's model card (Qwen/Qwen3-Reranker-0.6B, 4B, 8B)",
            head=ScoreHead("yes", "no"),
            default_instruction=_QWEN3_INSTRUCTION,
            names=("qwen3-reranker",),
            architectures=("Qwen3ForCausalLM",),
        ),
        Family(
            name="mxbai-rerank-v2",
            source="mixedbread-ai's mxbai-rerank package, MxbaiRerankV2 (mxbai-rerank-base-v2, large-v2)",
            head=ScoreHead("1", "0"),
            default_instruction=_MXBAI_INSTRUCTION,
            names=("mxbai-rerank-base-v2", "mxbai-rerank-large-v2", "mxbai-rerank-v2"),
            architectures=("Qwen2ForCausalLM",),
        ),
    )
}


def family_named(name: str) -> Family:
    """The family called ``name``; a ``ConfigError`` naming the families otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"family {name!r} is not one of {', '.join([AUTO, *FAMILIES])}",
            fix="pass family='auto' (detected from the model) or one of those names",
        ) from None


def check_family_name(name: str) -> None:
    """Refuse an unknown ``family=`` value early (``auto`` is allowed)."""
    if name != AUTO:
        family_named(name)


_SEPARATORS = re.compile(r"[\s_]+")


def detect_family(requested: str, config: dict[str, Any], names: Sequence[str]) -> Family:
    """The family of a model, from ``family=`` (``requested``), its ``config.json`` and its names (hub id, folder).

    A sequence classifier is a cross-encoder. A causal LM is the family whose name fragment appears in one of
    ``names`` (fine-tunes usually keep it), or whose architecture only it uses; anything else is refused with the
    families it could be, since a language model's next-token logits are no relevance score without its prompt.
    """
    architecture = str((config.get("architectures") or ["unknown"])[0])
    if requested != AUTO:
        family = family_named(requested)
        if family.decoder and not architecture.endswith("ForCausalLM"):
            raise UnsupportedModelError(
                f"family {family.name!r} is a decoder reranker, but the model is a {architecture}",
                fix="pass family='auto' for this model, or a causal LM checkpoint of that family",
            )
        if not family.decoder and not architecture.endswith("ForSequenceClassification"):
            raise UnsupportedModelError(
                f"family 'cross-encoder' needs a *ForSequenceClassification model, not a {architecture}",
                fix=f"pass one of the decoder families: {', '.join(_decoder_names())}",
            )
        return family
    if not architecture.endswith("ForCausalLM"):
        return CROSS_ENCODER
    lowered = [_SEPARATORS.sub("-", name.lower()) for name in names]
    for family in FAMILIES.values():
        if any(fragment in name for fragment in family.names for name in lowered):
            return family
    owners = [f for f in FAMILIES.values() if architecture in f.architectures]
    if len(owners) == 1 and owners[0].own_architecture:
        return owners[0]
    raise UnsupportedModelError(
        f"the model is a {architecture} (a language model) that matches no reranker family crossrank knows "
        f"({', '.join(_decoder_names())}); a language model is no reranker without its family's prompt",
        fix="if it is a fine-tune of one of those, pass family=<name> (--family); otherwise use a cross-encoder "
        "such as BAAI/bge-reranker-v2-m3",
    )


def _decoder_names() -> list[str]:
    return [name for name, family in FAMILIES.items() if family.decoder]
