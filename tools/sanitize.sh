#!/usr/bin/env bash
# Build rnnfast with AddressSanitizer + UndefinedBehaviorSanitizer and run tests under them.
#
# Usage (from anywhere; paths are relative to the repository):
#   tools/sanitize.sh                          # build, then run the default subset below
#   tools/sanitize.sh tests/test_kernels.py -k gru   # build, then run these pytest arguments
#
# Environment:
#   RNNFAST_SANITIZE_VENV   the venv to build into (default: build/sanitize-venv in the repository;
#                           created on first use, reused afterwards)
#   PYTHON                  the interpreter the venv is made from (default: python3)
#   RNNFAST_SANITIZE_SKIP_BUILD=1   reuse the venv's installed build as it is (no pip install)
#
# What it does:
#   1. python -m venv; pip install numpy pytest hypothesis and the build requirements
#      (scikit-build-core pybind11 cmeel-eigen), so the package builds with --no-build-isolation.
#   2. pip install the repository with -Ccmake.define.RNNFAST_SANITIZE=ON and RNNFAST_NATIVE=ON,
#      RelWithDebInfo (line numbers in reports), in its own build directory (build/sanitize) so
#      that the normal build is left alone. The first build takes a few minutes on 2 cores; later
#      runs rebuild only what changed.
#   3. Runs pytest with the ASan runtime and libstdc++ preloaded (python itself is not
#      instrumented; see the comment at LD_PRELOAD below), with
#        ASAN_OPTIONS=detect_leaks=0            CPython keeps objects alive at exit by design
#                    allocator_may_return_null=1  a huge malloc returns NULL (numpy then raises
#                                                 MemoryError, which tests/test_robustness.py
#                                                 checks) instead of ASan aborting the process
#        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
#      Reports from every process (subprocess tests too) go to build/sanitize-logs/.
#   4. Prints "sanitize: clean" and exits 0 when pytest passed and no sanitizer reported an error;
#      otherwise lists the sanitizer findings (or says there were none) and pytest's status, and
#      exits 1. Full reports and the pytest output stay in build/sanitize-logs/.
#
# The default subset is every test that exercises the compiled kernels and needs neither torch
# nor ONNX (those are cross-checks of the semantics, not of memory safety).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RNNFAST_SANITIZE_VENV:-$repo/build/sanitize-venv}"
logs="$repo/build/sanitize-logs"
python="${PYTHON:-python3}"

default_tests=(
  tests/test_kernels.py
  tests/test_errors.py
  tests/test_cells.py
  tests/test_layers_api.py
  tests/test_layers_reference.py
  tests/test_properties.py
  tests/test_robustness.py
)
if [ "$#" -gt 0 ]; then tests=("$@"); else tests=("${default_tests[@]}"); fi

start=$(date +%s)
if [ "${RNNFAST_SANITIZE_SKIP_BUILD:-0}" != 1 ]; then
  if [ ! -x "$venv/bin/python" ]; then
    echo "sanitize: creating $venv"
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet numpy pytest hypothesis scikit-build-core pybind11 cmeel-eigen
  echo "sanitize: building the ASan + UBSan kernels (build/sanitize)"
  "$venv/bin/python" -m pip install --quiet --no-build-isolation --no-deps --force-reinstall \
    -Ccmake.define.RNNFAST_SANITIZE=ON -Ccmake.define.RNNFAST_NATIVE=ON \
    -Ccmake.build-type=RelWithDebInfo -Cbuild-dir="$repo/build/sanitize" "$repo"
fi
built=$(date +%s)

# The ASan runtime must be loaded first (python is not instrumented), and libstdc++ with it: ASan
# looks up the real __cxa_throw when it starts, and without libstdc++ loaded by then the first C++
# exception (every ValueError raised in csrc/bind) aborts with "CHECK failed ... real___cxa_throw".
asan="$(g++ -print-file-name=libasan.so)"
cxx="$(g++ -print-file-name=libstdc++.so)"
for lib in "$asan" "$cxx"; do
  if [ ! -e "$lib" ]; then
    echo "sanitize: runtime library not found: $lib (from g++ -print-file-name)" >&2
    exit 1
  fi
done
preload="$asan:$cxx"

rm -rf "$logs"
mkdir -p "$logs"
tests_status=0
(
  cd "$repo"
  LD_PRELOAD="$preload" \
  ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:log_path=$logs/asan" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 \
    | tee "$logs/pytest.out"
  exit "${PIPESTATUS[0]}"
) || tests_status=$?
flags=$(LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0 \
  "$venv/bin/python" -c "import rnnfast; print(rnnfast.build_info()['flags'])")
end=$(date +%s)

echo "sanitize: kernels built with: $flags"
case "$flags" in
  *-fsanitize=address,undefined*) ;;
  *) echo "sanitize: the installed kernels are not a sanitizer build" >&2; tests_status=1 ;;
esac
# ASan and UBSan write one file per reporting process, but a report can also reach stderr (UBSan
# next to ASan, or a child process whose output a test captured and printed): look everywhere.
# "ERROR: AddressSanitizer", "CHECK failed" and "runtime error:" are findings; ASan's
# "WARNING: ... failed to allocate" lines are the huge-allocation tests working as intended.
pattern="ERROR: AddressSanitizer|AddressSanitizer: CHECK failed|runtime error:|ERROR: UndefinedBehaviorSanitizer|ERROR: LeakSanitizer"
findings=$(grep -h -E "$pattern" "$logs"/* 2>/dev/null | sed -E 's/0x[0-9a-f]+/0x.../g' | sort | uniq -c || true)
echo "sanitize: build $((built - start)) s, tests $((end - built)) s"
if [ -n "$findings" ]; then
  echo "sanitize: sanitizer findings (count, message; full reports in $logs):"
  echo "$findings"
else
  echo "sanitize: no sanitizer findings"
fi
if [ "$tests_status" -ne 0 ]; then
  echo "sanitize: pytest failed (status $tests_status): see the summary above"
fi
if [ -z "$findings" ] && [ "$tests_status" -eq 0 ]; then
  echo "sanitize: clean"
else
  echo "sanitize: NOT clean"
  exit 1
fi
