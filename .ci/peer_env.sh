#!/usr/bin/env bash
# The peer environment for the parity tests against FlagEmbedding's LLM rerankers (tests/families): FlagEmbedding
# 1.4.2 needs transformers < 5, so it gets its own virtual environment at $1, which the tests run as a subprocess
# (CROSSRANK_TEST_FLAG_PYTHON="$1/bin/python"). Prints nothing on success.
set -euo pipefail
if [ "$#" -ne 1 ]; then
  echo "usage: $0 VENV_DIR" >&2
  exit 2
fi
python3 -m venv "$1"
pip=("$1/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off)
# torch comes from pip's cache or wheel folder, as in .ci/run. FlagEmbedding's __init__ imports its fine-tuning
# code, which imports datasets (so it stays); its other requirements (sentence-transformers, ir-datasets,
# sentencepiece, protobuf) serve its embedders and evaluation, not the LLM rerankers, and are left out (--no-deps).
"${pip[@]}" torch==2.13.0 "transformers==4.57.6" "huggingface-hub<1" "datasets>=2.19,<6" "psutil"
"${pip[@]}" --no-deps "FlagEmbedding==1.4.2" "peft==0.17.1" "accelerate==1.16.0"
"$1/bin/python" -c "from FlagEmbedding import FlagLLMReranker, LayerWiseFlagLLMReranker"
