#!/usr/bin/env bash
# Re-creates everything in checkpoints/: the offline FID feature extractors, then the shipped
# generators (default recipe of `python -m mgr train-generator`), and copies each sample grid to docs/.
# CPU times are in docs/generators.md. Usage: scripts/train_shipped_generators.sh [--only-missing]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
only_missing=${1:-}

extractor() {  # dataset steps
  local out="checkpoints/feature_extractors/$1.pt"
  [ -n "$only_missing" ] && [ -f "$out" ] && return 0
  $PY -m mgr train-extractor --dataset "$1" --steps "$2" --quiet
}
generator() {  # dataset ratio
  local out="checkpoints/generators/$1_ratio$2_seed0.pt"
  [ -n "$only_missing" ] && [ -f "$out" ] && return 0
  $PY -m mgr train-generator --dataset "$1" --ratio "$2" --data-seed 0 --quiet
  cp "${out%.pt}.png" "docs/generators/$1_ratio$2_seed0.png"
}

mkdir -p docs/generators
extractor digits 1500
extractor fashion-mnist 2000
generator digits 0.1
generator digits 0.25
generator fashion-mnist 0.01
generator fashion-mnist 0.1
generator fashion-mnist 0.05
# the teaching demos' generators: each 1% split a demo seed trains on (data seeds 0, 1, 2: seed k of a demo uses
# data seed k mod 3) at base width 16, and the same recipe stopped at step 500, the weak-generator demo's
# (mgr/demos.py DEMO_GENERATOR, WEAK_GENERATOR)
for k in 0 1 2; do
  for steps in 2000 500; do
    out=checkpoints/generators/fashion-mnist_ratio0.01_seed${k}_w16$([ "$steps" = 500 ] && echo _step500).pt
    if [ -z "$only_missing" ] || [ ! -f "$out" ]; then
      $PY -m mgr train-generator --dataset fashion-mnist --ratio 0.01 --data-seed "$k" --width 16 --steps "$steps" \
        --out "$out" --quiet
      cp "${out%.pt}.png" "docs/generators/$(basename "${out%.pt}").png"
    fi
  done
done
# the bundled Fashion-MNIST subset holds every shipped generator's split
$PY scripts/build_fashion_mnist_bundle.py
