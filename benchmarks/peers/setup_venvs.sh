#!/usr/bin/env bash
# Creates the peer benchmark's venvs (git-ignored), each with one torch for every PyTorch side:
#   benchmarks/.venv-peers   torch + torchvision, flexunet (editable, this checkout), smp, MONAI: sides smp, monai,
#                            flexunet_seed, flexunet_best, and benchmarks/loop_overhead.py
#   benchmarks/.venv-nnunet  the same torch, then nnunetv2: side nnunet (its own CLI)
# The TF side uses benchmarks/.venv-tf (benchmarks/tf_reference/setup_venv.sh).
# torch 2.14.1 + torchvision 0.29.1, not the machine's CPU-only torch 2.13.0 file: PyPI's torchvision does not
# import beside that file ("operator torchvision::nms does not exist"), and smp needs torchvision through timm.
# Both lie on this machine's disk (a CUDA build, run on the CPU here). Usage: setup_venvs.sh [peers|nnunet]...
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
TORCH="torch==2.14.1"
TORCHVISION="torchvision==0.29.1"
for which in "${@:-peers nnunet}"; do
  for w in $which; do
    venv="$here/.venv-$w"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "$TORCH" "$TORCHVISION"  # first, so nothing after it pulls another torch
    if [ "$w" = peers ]; then
      "$venv/bin/pip" install -q -e "$here/.." "segmentation-models-pytorch==0.6.0"
      "$venv/bin/python" -c "import flexunet, monai, segmentation_models_pytorch"
    else
      "$venv/bin/pip" install -q nnunetv2
      "$venv/bin/nnUNetv2_plan_and_preprocess" -h >/dev/null
    fi
    echo "venv ready: $venv"
  done
done
