#!/usr/bin/env bash
# One command for a GPU machine: the test suite (CuPy tests included), the
# gradient benchmark, the full backend sweep and the book's full training run,
# every output in one folder.
#
#   bash scripts/gpu_suite.sh [OUT_DIR] [--install]
#
# --install first runs: pip install -e ".[test,cupy]" (needs PyPI). Without it the
# environment must already have xpnet's dependencies, CuPy and (optionally) torch.
set -euo pipefail
cd "$(dirname "$0")/.."
out="gpu-results/$(date -u +%Y%m%d-%H%M)"
install=0
for arg in "$@"; do
  case "$arg" in
    --install) install=1 ;;
    -*) echo "gpu_suite.sh: unknown option $arg" >&2; exit 2 ;;
    *) out="$arg" ;;
  esac
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ "$install" = 1 ]; then
  python -m pip install -q -e ".[test,cupy]"
fi
{ nvidia-smi || echo "nvidia-smi not found"; } > "$out/nvidia-smi.txt" 2>&1
python -c "import cupy; print('cupy', cupy.__version__, cupy.cuda.runtime.getDeviceCount(), 'device(s)')" \
  | tee "$out/cupy.txt"

# tests: on a GPU machine the cupy parameter of every backend test runs
python -m pytest -q -p no:cacheprovider 2>&1 | tee "$out/pytest.txt"

python scripts/bench_gradient.py --out "$out/gradient.json" 2>&1 | tee "$out/gradient.txt"
python scripts/bench_backends.py --out "$out/backends" 2>&1 | tee "$out/backends.txt"
python scripts/bench_train.py --out "$out/train" --no-progress 2>&1 | tee "$out/train.txt"
echo "gpu_suite: all outputs in $out"
