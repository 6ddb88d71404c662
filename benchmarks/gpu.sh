#!/usr/bin/env bash
# Issue 7's GPU checks in one run, for a machine with an NVIDIA GPU (device time is short: one call).
#
#   bash benchmarks/gpu.sh OUT_DIR
#
# Writes to OUT_DIR: env.txt (nvidia-smi, versions), tests.txt (tests/gpu on the real card), and
# crossrank-vs-sentence-transformers `crossrank bench --json` reports on the m3-shaped model:
# rag-float16.json, rag-bfloat16.json, short-float16.json, long-float16.json.
#
# Needs, beside this checkout: ../shared/models/{xlm-roberta-tokenizer,bge-reranker-v2-m3-config}
# (or SHARED=folder holding models/), torch with CUDA, transformers, sentence-transformers, and
# crossrank's other dependencies (a machine without them gets wheels: see BENCHMARKS.md, "GPU").
# A dry run of the plumbing on a machine without a GPU: DEVICE=cpu QUERIES=1 DOCS=4 MODEL=<a small model folder>.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
device=${DEVICE:-cuda}
queries=${QUERIES:-16}
docs=${DOCS:-100}
model=(-m m3-shape --tokenizer ../shared/models/xlm-roberta-tokenizer)
if [ -n "${MODEL:-}" ]; then model=(-m "$MODEL"); fi
shared=${SHARED:-../shared}
if [ ! -d ../shared ]; then
  ln -s "$(realpath "$shared")" ../shared  # where the tests look for it
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
  nvidia-smi || echo "no nvidia-smi"
  python3 -c "import sys, torch, transformers, sentence_transformers as st; print(sys.version); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available()); \
print('transformers', transformers.__version__, 'sentence-transformers', st.__version__)"
} >"$out/env.txt" 2>&1

timeout 300 python3 -m pytest tests/gpu -q -p no:cacheprovider -o addopts="-ra --durations=10" >"$out/tests.txt" 2>&1
echo "tests/gpu: exit $?" >>"$out/tests.txt"

bench() {  # name, then crossrank bench options
  local name=$1
  shift
  timeout 240 python3 -m crossrank bench "${model[@]}" --device "$device" --queries "$queries" \
    --compare sentence-transformers --json "$@" >"$out/$name.json" 2>"$out/$name.err"
  echo "$name: exit $?"
}
bench rag-float16 --dtype float16 --docs "$docs"
bench rag-bfloat16 --dtype bfloat16 --docs "$docs"
bench short-float16 --dtype float16 --docs "$docs" --workload short
bench long-float16 --dtype float16 --docs "$(( docs < 8 ? docs : 8 ))" --workload long --max-length 8192
