#!/usr/bin/env bash
# One command for a GPU machine: the fast test tier (CuPy tests included), the
# gradient benchmark, a CuPy sweep over sizes and the book's full training run on
# CuPy, every output in one folder. Each step has a time limit (9.5 minutes in
# all), so that the whole fits one 10-minute command of a 15-minute lease (on one
# H200 with 16 cores, 2026-12-04, the steps took about 3.1 / 1.3 / 1.6 / 1.1 minutes;
# the slow tier did not fit, and the batched method on NumPy alone takes 27 s a
# gradient there).
#
#   bash scripts/gpu_suite.sh [OUT_DIR] [--install]
#
# --install first runs: pip install -e ".[test,cupy]" (needs PyPI). Without it the
# environment must already have xpnet's dependencies, CuPy, pytest-xdist and
# (optionally) torch. Fashion-MNIST is read from $XPNET_DATA_DIR/fashion-mnist or
# Debian's /usr/share/datasets/fashion-mnist.
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

# a step's output and exit status, within its time limit (seconds); the suite goes on
step() {
  local name=$1 limit=$2
  shift 2
  local rc=0
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1 || rc=$?
  echo "rc=$rc at $(date -u +%T) (limit ${limit} s)" >> "$out/$name.txt"
  tail -n 3 "$out/$name.txt"
}

# tests: on a GPU machine the cupy parameter of every backend test runs
# (pytest-benchmark, where installed, warns under xdist: off, as warnings are errors)
step pytest 210 python -m pytest -q -p no:cacheprovider -p no:benchmark -m "not slow" -n auto

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

step gradient 130 python scripts/bench_gradient.py --backends cupy,numpy --loop-sample 100 \
  --batched-repeats 1 --out "$out/gradient.json"
step train 130 python scripts/bench_train.py --backends cupy --out "$out/train" --no-progress
step backends 90 python scripts/bench_backends.py --backends cupy --max-seconds 5 \
  --methods forward,backprop,structured,complex,batched --out "$out/backends"
echo "gpu_suite: all outputs in $out"
