#!/usr/bin/env bash
# GPU check (issue: throughput), under 5 minutes on one H100-class GPU:
#   1. augmented views/s, batched on the GPU vs the per-image DataLoader reference
#   2. full-step overhead vs model-only forward/backward (ResNet-18, batch 512, bf16, channels_last)
#   3. a 2-epoch run of the real stages on a synthetic CIFAR-shaped layout (10 classes, 32x32 PNGs),
#      bf16 + channels_last + torch.compile, printing views/s and peak GPU memory
#
#   benchmarks/gpu_check.sh [--device cuda] [--images 10000] [--batch 512]
# With --device cpu --images 600 --batch 32 the same script is a CPU smoke run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
device=cuda images=10000 batch=512
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --images) images=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    *) echo "error: unknown option $1 (expected --device, --images, --batch)" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -c "
import sys; sys.path.insert(0, '$here')
from pathlib import Path
from validate_speed import generate
generate(Path('$work/layout'), $images)
"
echo "== 1. augmentation throughput"
python "$here/augment_throughput.py" --root "$work/layout" --batch "$batch" --device "$device"
echo "== 2. step overhead"
cl=--channels-last; prec=bf16
python "$here/step_overhead.py" --batch "$batch" --device "$device" --precision "$prec" $cl
echo "== 3. two epochs of the real stages, bf16 + channels_last + compile"
extra=(); [ "$device" = cpu ] && extra=(--set train.compile=false --set train.precision=fp32 --set extract.precision=fp32 --set train.batch_size=$batch)
python "$here/cifar10_gpu.py" "$work/layout" --epochs 2 --device "$device" --work "$work/run" "${extra[@]}"
