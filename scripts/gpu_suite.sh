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

# a second GPU: a network on device 1 while device 0 is current must keep every
# array on device 1 (array-api-compat ignores device= for CuPy; xpnet enters the
# device's context), and its gradient must equal device 0's
gpus=$(python -c "import cupy; print(cupy.cuda.runtime.getDeviceCount())")
if [ "$gpus" -ge 2 ]; then
  python - <<'PY' 2>&1 | tee "$out/device1.txt"
import numpy as np, cupy, xpnet
x = np.random.default_rng(0).random((50, 784)); t = np.arange(50) % 10
on0 = xpnet.TwoLayerNet(784, 50, 10, backend="cupy", device=0, seed=0)
with cupy.cuda.Device(0):
    on1 = xpnet.TwoLayerNet(784, 50, 10, backend="cupy", device=1, seed=0)
    g1 = on1.numerical_gradient(x, t)
    h = xpnet.train(xpnet.TrainConfig(backend="cupy", device="1", iters=20), progress=False, log=None)
g0 = on0.numerical_gradient(x, t)
devices = {a.device.id for a in [*on1.params.values(), *g1.values(), *h["net"].params.values()]}
assert devices == {1}, devices
worst = max(float(np.linalg.norm(g1[k].get() - g0[k].get()) / np.linalg.norm(g0[k].get())) for k in g0)
print(f"device 1: every array on GPU 1; gradient vs GPU 0: {worst:.1e} normwise")
PY
else
  echo "one GPU: the device=1 check needs two" | tee "$out/device1.txt"
fi

python scripts/bench_gradient.py --out "$out/gradient.json" 2>&1 | tee "$out/gradient.txt"
python scripts/bench_backends.py --out "$out/backends" 2>&1 | tee "$out/backends.txt"
python scripts/bench_train.py --out "$out/train" --no-progress 2>&1 | tee "$out/train.txt"
echo "gpu_suite: all outputs in $out"
