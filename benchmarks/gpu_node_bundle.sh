#!/usr/bin/env bash
# Where a package index is reachable: fill offline/ with what an offline GPU node needs to run
# benchmarks/gpu_node.sh, then carry offline/ (git-ignored) with the checkout.
#
#   benchmarks/gpu_node_bundle.sh [--python-version 3.12] [--dataset PATH] [--offline DIR] [PACKAGE ...]
#
# Wheels: PACKAGEs (default: jsonschema, the one runtime dependency such a node lacks: it has torch,
# torchvision, scikit-learn, matplotlib, tqdm and pyyaml; dvc, dvclive and snakemake are not needed
# to run the stages) and everything they depend on, as binary wheels for CPython --python-version
# on x86-64 Linux. gpu_node.sh later installs only those the node does not already have.
# Dataset: PATH (default ../shared/datasets/cifar10-jpg.tar.gz beside the checkout), copied.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pyver=3.12 dataset=$root/../shared/datasets/cifar10-jpg.tar.gz offline=$root/offline pkgs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) pyver=$2; shift 2 ;;
    --dataset) dataset=$2; shift 2 ;;
    --offline) offline=$2; shift 2 ;;
    -*) echo "error: unknown option $1 (expected --python-version, --dataset, --offline, PACKAGE...)" >&2; exit 2 ;;
    *) pkgs+=("$1"); shift ;;
  esac
done
[ ${#pkgs[@]} -gt 0 ] || pkgs=(jsonschema)
mkdir -p "$offline/wheels"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --implementation cp \
  --python-version "$pyver" "${platforms[@]}" -d "$offline/wheels" "${pkgs[@]}"
if [ -f "$dataset" ]; then
  cp "$dataset" "$offline/cifar10-jpg.tar.gz"
else
  echo "warning: $dataset: no dataset archive copied; put one at $offline/cifar10-jpg.tar.gz" >&2
fi
echo "gpu_node_bundle: $(ls "$offline/wheels" | wc -l) wheels for Python $pyver in $offline/wheels ($(du -sh "$offline" | cut -f1) in all)"
ls "$offline/wheels"
