#!/usr/bin/env bash
# One command for an offline GPU node: no package index, no internet, a site-provided PyTorch.
#
#   benchmarks/gpu_node.sh [--offline DIR] [--out DIR] [--budget SECONDS] [--preset FILE] [--smoke]
#
# It installs what the node lacks from the carried wheel folder alone (pip --no-index), checks every
# runtime dependency against pyproject.toml, unpacks the dataset, then runs benchmarks/gpu_node.py:
# the real CIFAR-10 through validate -> pretrain -> extract -> probe (configs/cifar10-resnet18-short.yaml,
# as many epochs as fit) and the short GPU checks, all within --budget seconds of wall time counted
# from this script's start (default 540). One table: DIR/results.md (also results.json, log.txt).
# --preset: another preset over params.yaml (e.g. configs/cifar10-resnet18-short-official.yaml, the A/B).
#
# DIR (default offline/, git-ignored) is what travels with the checkout; make it where an index is
# reachable with benchmarks/gpu_node_bundle.sh:
#   offline/wheels/*.whl          the packages the node lacks, for its Python (3.12 by default)
#   offline/cifar10-jpg.tar.gz    the dataset in the layout (class.txt, train/, test/)
# --smoke: a CPU run of the same parts at toy sizes (benchmarks/gpu_node_rehearse.sh uses it).
# PYTHON names the interpreter (default python3: the node's, with its torch).
set -euo pipefail
started=$(date +%s.%N)
root=$(cd "$(dirname "$0")/.." && pwd)
offline=$root/offline out=$root/runs/gpu_node_out budget=540 smoke=() preset=()
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) offline=$(cd "$2" && pwd); shift 2 ;;
    --out) out=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --smoke) smoke=(--smoke); shift ;;
    --preset) [ -f "$2" ] || { echo "error: --preset $2: expected a preset file, not found" >&2; exit 2; }
              preset=(--preset "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); shift 2 ;;
    *) echo "error: unknown option $1 (expected --offline DIR, --out DIR, --budget SECONDS, --preset FILE, --smoke)" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python3}
archive=$offline/cifar10-jpg.tar.gz
[ -f "$archive" ] || { echo "error: $archive: expected the dataset archive (class.txt, train/, test/ inside), not found" >&2; exit 2; }
node=$root/runs/node                      # installed wheels and the unpacked dataset
mkdir -p "$node/site" "$node/data"
export PYTHONPATH=$node/site:$root/src${PYTHONPATH:+:$PYTHONPATH}
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1
"$py" "$root/benchmarks/gpu_node.py" install --wheels "$offline/wheels" --site "$node/site"
"$py" "$root/benchmarks/gpu_node.py" check
stamp=$node/data/.unpacked-$(cksum < "$archive" | cut -d' ' -f1)
if [ ! -f "$stamp" ]; then
  rm -rf "$node/data" && mkdir -p "$node/data"
  tar -xzf "$archive" -C "$node/data" && touch "$stamp"
fi
classes=$(find "$node/data" -maxdepth 3 -name class.txt | head -n 1)
[ -n "$classes" ] || { echo "error: $archive: expected a class.txt inside, found none" >&2; exit 2; }
setup=$(python3 -c "import time; print(round(time.time() - $started, 1))" 2>/dev/null || "$py" -c "import time; print(round(time.time() - $started, 1))")
exec "$py" "$root/benchmarks/gpu_node.py" run --data "$(dirname "$classes")" --out "$out" --budget "$budget" \
  --started "$started" --setup-s "$setup" "${preset[@]}" "${smoke[@]}"
