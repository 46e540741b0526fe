#!/usr/bin/env bash
# Rehearse benchmarks/gpu_node.sh on any CPU machine that reaches a package index, as the offline
# GPU node will run it:
#   1. a fresh venv (--python, default python3.12) holding only what the node has: torch 2.11 and
#      torchvision 0.26 (--torch, --torchvision; or the closest the index serves), scikit-learn,
#      matplotlib, tqdm and pyyaml; no jsonschema, dvc, dvclive or snakemake;
#   2. offline/ filled by gpu_node_bundle.sh for that Python: wheels, and the dataset archive
#      (../shared/datasets/cifar10-jpg.tar.gz, else a small generated layout);
#   3. gpu_node.sh --smoke with that venv's python and PIP_NO_INDEX=1: the install from the carried
#      wheels into a fresh target, the dependency check, the unpack, and every part of the GPU run
#      at toy sizes on the CPU, ending with the same table.
#
#   benchmarks/gpu_node_rehearse.sh [--python python3.12] [--torch 2.11.0] [--torchvision 0.26.0]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=python3.12 torch=2.11.0 vision=0.26.0
while [ $# -gt 0 ]; do
  case "$1" in
    --python) py=$2; shift 2 ;;
    --torch) torch=$2; shift 2 ;;
    --torchvision) vision=$2; shift 2 ;;
    *) echo "error: unknown option $1 (expected --python, --torch, --torchvision)" >&2; exit 2 ;;
  esac
done
command -v "$py" >/dev/null && "$py" -c 'import venv' 2>/dev/null ||
  { echo "error: --python $py: expected a Python with venv (the node runs 3.12), not found" >&2; exit 2; }
work=$root/runs/rehearsal
rm -rf "$work" "$root/runs/node"          # a fresh venv and a fresh install target
"$py" -m venv "$work/venv"
echo "== 1. venv with the node's packages: torch $torch, torchvision $vision, scikit-learn, matplotlib, tqdm, pyyaml"
"$work/venv/bin/pip" install -q --disable-pip-version-check "torch==$torch" "torchvision==$vision" \
  scikit-learn matplotlib tqdm pyyaml
if "$work/venv/bin/python" -c "import jsonschema" 2>/dev/null; then
  echo "error: the rehearsal venv has jsonschema, which the node lacks; the rehearsal would prove nothing" >&2; exit 1
fi
pyver=$("$work/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
echo "== 2. offline/ for Python $pyver"
bash "$root/benchmarks/gpu_node_bundle.sh" --python-version "$pyver"
if [ ! -f "$root/offline/cifar10-jpg.tar.gz" ]; then   # no real CIFAR-10 here: a generated layout
  "$work/venv/bin/python" - "$work/layout/cifar10" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
root, rng = Path(sys.argv[1]), np.random.default_rng(0)
classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
root.mkdir(parents=True)
(root / "class.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(classes)))
for split, per_class in (("train", 40), ("test", 20)):
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for k in range(per_class):  # smooth random 32x32 images, as JPEG like the real copy
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((32, 32), Image.BILINEAR).save(root / split / c / f"{k:04d}.jpg")
PY
  tar -czf "$root/offline/cifar10-jpg.tar.gz" -C "$work/layout" cifar10
fi
echo "== 3. gpu_node.sh --smoke, no index"
PYTHON=$work/venv/bin/python bash "$root/benchmarks/gpu_node.sh" --smoke --out "$work/out"
echo "rehearsal: passed; table in $work/out/results.md"
