#!/usr/bin/env bash
# Creates benchmarks/.venv-tf (git-ignored) with the TF reference's dependencies. flexunet never imports TensorFlow.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python3 -m venv "$here/.venv-tf"
"$here/.venv-tf/bin/pip" install -q tensorflow-cpu==2.21.0 pillow
"$here/.venv-tf/bin/python" "$here/tf_reference/worker.py" --help >/dev/null
echo "TF reference venv ready: $here/.venv-tf"
