"""DecoderBackend: a decoder (LLM) reranker run by PyTorch, scored on its next-token logits.

A causal LM reads each prompt (``crossrank.families``); the score is read at the last real position: the logit of
the family's "yes" token, minus its "no" token's where it has one. Only those rows of the language-model head are
computed, at that one position, not the whole vocabulary at every position (a vocabulary of 150,000-250,000 tokens
costs more than the rest of a small model). A layer-wise model (``crossrank.backends.minicpm``) is built cut at its
cutoff layer, with that layer's one-row score head as its language-model head, and read the same way.

The ids every pair of a query shares (system prompt, instruction, query: ``EncodedBatch.shared_prefix``) are run
once per query and their keys and values reused by each document. Attention is causal, so a token never reads
what follows it: the documents' scores are those of running each full prompt (a test holds them equal).
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoModelForCausalLM

from crossrank.backends.base import EncodedBatch, TokenHead
from crossrank.backends.minicpm import is_layerwise, load_layerwise
from crossrank.backends.torch import TorchBackend
from crossrank.config import RuntimeOptions
from crossrank.errors import ConfigError, UnsupportedModelError

__all__ = ["DecoderBackend"]

# A shared prefix shorter than this is not worth a pass of its own.
_MIN_SHARED = 8


@dataclass(frozen=True, slots=True)
class _Group:
    """Rows of a batch that share their first ``shared`` ids."""

    rows: list[int]
    shared: int


def _groups(batch: EncodedBatch) -> list[_Group]:
    """The batch's rows by shared prefix (one group, with nothing shared, when the batch says nothing of it).

    A prefix only one row has gains nothing from its own pass: such rows (a micro-batch of one-document requests)
    run together in one pass, as do rows whose shared prefix is too short to be worth one.
    """
    lengths = batch.attention_mask.sum(axis=1)
    if batch.shared_prefix is None:
        return [_Group(list(range(batch.size)), 0)]
    by_prefix: dict[bytes, list[int]] = {}
    for row in range(batch.size):
        by_prefix.setdefault(batch.input_ids[row, : batch.shared_prefix[row]].tobytes(), []).append(row)
    groups, alone = [], []
    for rows in by_prefix.values():
        # Every row keeps at least its last token to compute: the score is read there.
        shared = min(int(batch.shared_prefix[rows[0]]), int(lengths[rows].min()) - 1)
        if len(rows) > 1 and shared >= _MIN_SHARED:
            groups.append(_Group(rows, shared))
        else:
            alone += rows
    return groups + ([_Group(sorted(alone), 0)] if alone else [])


@functools.cache
def _cache_keyword_of(forward: Any) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _cache_keyword(base: Any) -> str:
    """What the model's forward calls its key/value cache (transformers renamed ``past_key_values`` to ``cache``)."""
    return _cache_keyword_of(type(base).forward)


class DecoderBackend(TorchBackend):
    """Runs ``AutoModelForCausalLM`` (a layer-wise model: ``load_layerwise``'s) under ``torch.inference_mode`` and
    reads ``head`` at the last real position.

    Device, precision, CUDA out-of-memory recovery and the float32 recompute are ``TorchBackend``'s.
    """

    decoder = True
    _auto_class = AutoModelForCausalLM

    def __init__(
        self,
        model_dir: Path,
        *,
        head: TokenHead,
        runtime: RuntimeOptions,
        allow_pickle: bool,
        trust_remote_code: bool,
        model_digest: str = "",
    ) -> None:
        self.head = head
        # The rows of the language-model head read: the score tokens', or a layer-wise model's one row.
        self._rows = [head.positive] + ([] if head.negative is None else [head.negative])
        super().__init__(
            model_dir,
            runtime=runtime,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            model_digest=model_digest,
        )

    def _load(self, dtype: torch.dtype) -> Any:
        config = json.loads((self._model_dir / "config.json").read_text(encoding="utf-8"))
        if is_layerwise(config):
            self._rows = [0]
            return load_layerwise(self._model_dir, self.head.layer, dtype)
        if self.head.layer is not None:
            raise ConfigError(
                f"cutoff_layer {self.head.layer} is for layer-wise models (bge-reranker-v2-minicpm-layerwise); "
                f"{self._model_dir.name} scores at its last layer only",
                fix="leave cutoff_layer unset for this model",
            )
        model = super()._load(dtype)
        vocabulary = int(model.get_input_embeddings().weight.shape[0])
        if max(self._rows) >= vocabulary:
            raise UnsupportedModelError(
                f"the score token ids {self._rows} are outside the model's vocabulary of {vocabulary}",
                fix="the tokenizer and the weights come from different models: download the model again",
            )
        return model

    def _run(self, model: Any, device: torch.device, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        autocast = self._autocast and device.type == "cpu"
        scores = np.empty(batch.size, dtype=np.float32)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for group in _groups(batch):
                scores[group.rows] = self._group_scores(model, device, batch, group)
        return scores

    def _group_scores(
        self, model: Any, device: torch.device, batch: EncodedBatch, group: _Group
    ) -> npt.NDArray[np.float32]:
        """The group's scores: its shared prefix run once (its keys and values expanded to every row), then the
        rest of each row against it."""
        base = model.base_model
        mask = batch.attention_mask[group.rows]
        width = int(mask.sum(axis=1).max())
        ids = torch.from_numpy(batch.input_ids[group.rows, :width]).to(device)
        attention = torch.from_numpy(mask[:, :width]).to(device)
        keyword = _cache_keyword(base)
        cache = None
        if group.shared:
            cache = getattr(base(input_ids=ids[:1, : group.shared], use_cache=True), keyword)
            cache.batch_repeat_interleave(len(group.rows))
        rest = ids[:, group.shared :]
        positions = torch.arange(group.shared, width, device=device).expand(len(group.rows), -1)
        hidden = base(
            input_ids=rest,
            attention_mask=attention,
            position_ids=positions,
            use_cache=cache is not None,
            **{keyword: cache},
        ).last_hidden_state
        last = attention[:, group.shared :].sum(dim=1) - 1
        return self._read(model, hidden[torch.arange(len(group.rows), device=device), last])

    def _read(self, model: Any, hidden: torch.Tensor) -> npt.NDArray[np.float32]:
        """The head's logit from each row's last hidden state: only the read rows of the LM head."""
        output = model.get_output_embeddings()
        logits = hidden @ output.weight[self._rows].T
        if getattr(output, "bias", None) is not None:
            logits = logits + output.bias[self._rows]
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        logits = logits.float()
        score = logits[:, 0] if len(self._rows) == 1 else logits[:, 0] - logits[:, 1]
        result: npt.NDArray[np.float32] = score.cpu().numpy()
        return result
