#!/usr/bin/env bash
# The engine's C core under AddressSanitizer + UndefinedBehaviorSanitizer (make asan-test).
#
# Builds binarynet.engine._core with -fsanitize=address,undefined into a temporary copy of the
# package (the normal in-place build is never touched), then runs against it, with the
# compiler's libasan preloaded into CPython: the kernel tests (tests/test_engine_kernels*.py,
# tests/test_engine_core_*.py), the engine model and format tests, and the thread pool's own
# self-test. Fails on any sanitizer report: AddressSanitizer writes its reports to files (so a
# test that captures a child's output cannot swallow one); UBSan ignores log_path next to ASan
# (GCC's separate runtimes), so its reports go to this script's output, which is scanned, and
# a child it stops exits non-zero, which fails the test that ran it.
#
#   bash scripts/asan_test.sh            # PYTHON=/path/to/python to pick the interpreter
#   KEEP=1 bash scripts/asan_test.sh     # keep the temporary build and logs
set -u

cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # the build cds away
CC="${CC:-gcc}"
LIBASAN="$("$CC" -print-file-name=libasan.so)"
if [ ! -e "$LIBASAN" ]; then
  echo "asan_test: $CC has no libasan.so (install the compiler's sanitizer runtime)" >&2
  exit 2
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/binarynet-asan.XXXXXX")"
cleanup() { if [ -z "${KEEP:-}" ]; then rm -rf "$TMP"; else echo "asan_test: kept $TMP"; fi; }
trap cleanup EXIT

# 1. a copy of the sources without the normal build, built in place there
mkdir -p "$TMP/repo" "$TMP/reports"
cp -r setup.py pyproject.toml src "$TMP/repo/"
[ -e README.md ] && cp README.md "$TMP/repo/"
find "$TMP/repo/src" \( -name '*.so' -o -name '__pycache__' -o -name '*.egg-info' \) -prune \
  -exec rm -rf {} +
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
echo "asan_test: building the core with $SAN"
if ! (cd "$TMP/repo" && CC="$CC" CFLAGS="$SAN -g" LDFLAGS="-fsanitize=address,undefined" \
      "$PY" setup.py -q build_ext --inplace --force >"$TMP/build.log" 2>&1); then
  cat "$TMP/build.log" >&2
  echo "asan_test: the sanitizer build failed" >&2
  exit 1
fi

# 2. tests against that build. CPython and numpy are not instrumented: only leak checking is
# off (the interpreter keeps its objects at exit), and a huge malloc returns NULL as it does
# without ASan, so the core's out-of-memory path is exercised rather than aborting.
export PYTHONPATH="$TMP/repo/src"
export LD_PRELOAD="$LIBASAN${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:log_path=$TMP/reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONFAULTHANDLER=1
run_checks() {
local status=0
"$PY" - <<'EOF' || status=1
import os
from binarynet.engine import _core
assert _core.__file__.startswith(os.environ["PYTHONPATH"]), _core.__file__  # the ASan build
print("asan_test: core from", _core.__file__)
for threads in (2, 3, 4):
    bad = _core.pool_selftest(200_000, threads)
    print(f"asan_test: pool_selftest(200000, {threads}) -> {bad} bad jobs")
    assert bad == 0
EOF
# --capture=sys: a report written to fd 2 by the C runtime is not held back in pytest's capture
# file (and lost when the sanitizer stops the process)
"$PY" -m pytest -q -p no:cacheprovider --capture=sys tests/test_engine_kernels*.py \
  tests/test_engine_core_*.py tests/test_engine_model.py tests/test_engine_format.py || status=1
return $status
}
run_checks 2>&1 | tee "$TMP/run.log"
status=${PIPESTATUS[0]}

# 3. any report, from this process tree or a child a test started, fails the run
reports=$(find "$TMP/reports" -type f | sort)
if [ -n "$reports" ] || grep -q -E "runtime error:|ERROR: (Address|UndefinedBehavior)Sanitizer" \
    "$TMP/run.log"; then
  for f in $reports; do echo "==== $f" >&2; cat "$f" >&2; done
  echo "asan_test: FAILED: sanitizer reports above" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "asan_test: FAILED (tests failed, no sanitizer report)" >&2
  exit 1
fi
echo "asan_test: passed, no AddressSanitizer or UndefinedBehaviorSanitizer report"
