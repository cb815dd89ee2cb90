#!/usr/bin/env bash
# Creates .venv-recbole (gitignored) with RecBole 1.2.1 for bench/recbole_compare.py.
# RecBole 1.2.1 runs here only with older pins: numpy < 2, scipy < 1.12, pandas < 2.2, and a setuptools that
# still ships pkg_resources (ray, which RecBole imports, needs it). The usual pin setuptools < 70 cannot be
# met next to torch 2.13.0, which requires setuptools >= 77.0.3, so setuptools is held at >= 77.0.3, < 81.
# torch==2.13.0 is named in the same pip command as RecBole so that pip takes the local CPU wheel, not a
# CUDA build. safetensors holds recbole_worker.py's checkpoints (no pickle).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RECBOLE_VENV:-.venv-recbole}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import recbole.quick_start, safetensors" 2>/dev/null; then
  echo "$VENV: RecBole already installed"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "recbole==1.2.1" "torch==2.13.0" "numpy<2" "scipy<1.12" "pandas<2.2" \
  "setuptools>=77.0.3,<81" safetensors
"$VENV/bin/python" -W ignore -c "import recbole.quick_start, recbole, torch, numpy, scipy, pandas, setuptools; \
print('recbole', recbole.__version__, '| torch', torch.__version__, '| numpy', numpy.__version__, \
'| scipy', scipy.__version__, '| pandas', pandas.__version__, '| setuptools', setuptools.__version__)"
