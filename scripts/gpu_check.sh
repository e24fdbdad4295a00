#!/usr/bin/env bash
# One-shot GPU check for issue 6, run on a lent GPU machine from the repository root:
#   environment -> build of the 1-bit tensor-core kernel (ptxas report, SASS check) and of the CPU
#   engine's C core (export and the CPU engine need it) -> GPU tests (the packed engine on the GPU
#   vs the CPU engine; compiled Triton + tensor-core kernels vs the numpy reference) -> benchmark
#   (kernels, MNIST MLP, and the packed engine end to end on the MNIST MLP and CIFAR-10 ConvNet).
# Installs nothing and needs no network: python3 there must already have torch, triton, numpy,
# pytest, and gcc. Logs go to $OUT (default ./gpu_check_out; 6 files: env.log, build.log,
# tests_engine.log, tests.log, bench.log, bench.json); the benchmark runs even if tests fail.
# Whole run: about 5 minutes at most (each step has its own timeout).
#
#   OUT=/some/dir bash scripts/gpu_check.sh
set -u
set -x

OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export BINARYNET_CACHE_DIR="${TMPDIR:-/tmp}/binarynet-gpu-check"  # nvcc builds, kept out of $OUT
export TRITON_DEFAULT_FP_FUSION=1  # silences a triton>=3.9 warning; our kernels are integer-only
unset TRITON_INTERPRET BINARYNET_GPU_GEMM
if [ -d /usr/local/cuda/bin ]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
PY="${PYTHON:-python3}"
START=$(date +%s)
status=0

# 1. environment (versions first, so a failed run still says what it ran on)
{
  date -u
  nvidia-smi || true
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu \
    --format=csv || true
  command -v nvcc && nvcc --version || echo "nvcc: not found"
  "$PY" --version
  timeout 60 "$PY" - <<'EOF'
import numpy, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "capability", f"{p.major}.{p.minor}", "SMs", p.multi_processor_count,
          "memory GiB", round(p.total_memory / 2**30, 1))
import triton
print("triton", triton.__version__, "numpy", numpy.__version__)
try:
    import pytest, hypothesis
    print("pytest", pytest.__version__, "hypothesis", hypothesis.__version__)
except ImportError as err:
    print("missing:", err)
EOF
} > "$OUT/env.log" 2>&1 || status=1
cat "$OUT/env.log"

# 2. the tensor-core kernel: resource report and the BMMA instructions in its SASS (no GPU needed)
{
  if command -v nvcc >/dev/null; then
    mkdir -p "$BINARYNET_CACHE_DIR"
    cubin="$BINARYNET_CACHE_DIR/bmma_sm90.cubin"
    timeout 120 nvcc -O3 -std=c++17 -arch=sm_90 -Xptxas -v -cubin -o "$cubin" \
      src/binarynet/gpu/bmma.cu 2>&1 | grep -E "error|warning|Compiling|registers|spill" || true
    if command -v cuobjdump >/dev/null; then
      cuobjdump -sass "$cubin" | grep -oE "BMMA[A-Z0-9_.]*|LDSM[A-Z0-9_.]*|LDGSTS[A-Z0-9_.]*" \
        | sort | uniq -c || true
    fi
  fi
} > "$OUT/build.log" 2>&1
# the CPU engine's C core (binarynet.engine._core), built in place for this python (seconds)
{
  echo "== python3 setup.py build_ext --inplace"
  timeout 120 "$PY" setup.py build_ext --inplace > "${TMPDIR:-/tmp}/binarynet-build-ext.log" 2>&1
  rc=$?
  tail -n 5 "${TMPDIR:-/tmp}/binarynet-build-ext.log"
  echo "build_ext: exit $rc"
  if [ "$rc" -ne 0 ]; then
    # A setuptools older than pyproject.toml wants (>=77) rejects its metadata: build setup.py's
    # extension alone, from a folder without pyproject.toml, and copy it into the package.
    echo "== fallback: setup.py build_ext outside pyproject.toml"
    ext_dir=$(mktemp -d)
    ln -s "$PWD/src" "$ext_dir/src"
    cp setup.py "$ext_dir/"
    (cd "$ext_dir" && timeout 120 "$PY" setup.py build_ext --build-lib "$ext_dir/lib" \
      --build-temp "$ext_dir/tmp") > "${TMPDIR:-/tmp}/binarynet-build-ext.log" 2>&1
    rc=$?
    tail -n 5 "${TMPDIR:-/tmp}/binarynet-build-ext.log"
    cp "$ext_dir"/lib/binarynet/engine/_core*.so src/binarynet/engine/ && echo "fallback: exit $rc"
  fi
  timeout 60 "$PY" -c "from binarynet.engine import _core; print('engine core:', _core.__file__)"
} >> "$OUT/build.log" 2>&1 || status=1
cat "$OUT/build.log"

# 3. GPU tests. First the packed engine on the GPU (PackedModel.to("cuda") vs the CPU engine, a
# saved model on the real device), in its own log; then the kernels: compiled Triton kernels and
# the tensor-core kernel against the numpy reference.
timeout 90 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_gpu_engine.py \
  > "$OUT/tests_engine.log" 2>&1 || status=1
tail -n 20 "$OUT/tests_engine.log"
kernel_tests=$(ls tests/test_gpu_*.py | grep -v "tests/test_gpu_engine.py")
# shellcheck disable=SC2086  # one path per word
timeout 150 "$PY" -m pytest -q -rs -p no:cacheprovider --continue-on-collection-errors \
  $kernel_tests > "$OUT/tests.log" 2>&1 || status=1
tail -n 40 "$OUT/tests.log"

# 4. benchmark (8192^3, the MLP's shapes, the MNIST MLP end to end; tile sweep at 8192^3; the
# packed engine end to end), given whatever is left of about 5 minutes, but at least 2.
left=$(( 300 - ($(date +%s) - START) ))
[ "$left" -lt 120 ] && left=120
timeout "$left" "$PY" benchmarks/bench_gpu.py --sweep --json "$OUT/bench.json" \
  > "$OUT/bench.log" 2>&1 || status=1
cat "$OUT/bench.log"

echo "gpu_check: done in $(( $(date +%s) - START )) s, status $status (logs in $OUT)"
exit $status
