#!/usr/bin/env bash
# Real CIFAR-10, one GPU, about ten minutes: validate -> pretrain -> extract -> probe with a preset,
# then one table (epochs, time per stage, views/s, peak GPU memory, linear/kNN/label-scarce top-1,
# random-init baseline).
#
#   benchmarks/cifar10_gpu.sh DATA_ROOT [--preset configs/cifar10-resnet18-short.yaml]
#                                       [--limit-per-class N] [--epochs E] [--device cpu|cuda] [--work DIR]
#
# DATA_ROOT is a dataset in the layout (class.txt, train/, test/), e.g. the JPEG CIFAR-10 in
# ../shared/datasets/cifar10-jpg.tar.gz once extracted. --limit-per-class and --epochs make the same
# command a CPU smoke run (tests/test_benchmarks.py does that on a layout it builds).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python "$here/cifar10_gpu.py" "$@"
