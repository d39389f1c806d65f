#!/usr/bin/env bash
# Fuzz the C++ operator core (tests/fuzz/fuzz_core.cc) under AddressSanitizer and
# UndefinedBehaviorSanitizer.
#
#   scripts/fuzz.sh                 # 45 s with the standalone driver (g++ or clang++)
#   scripts/fuzz.sh 3600            # a longer local run (seconds)
#   scripts/fuzz.sh 600 --libfuzzer # libFuzzer (needs clang++), corpus in build/fuzz-libfuzzer/corpus
#   scripts/fuzz.sh 60 --hypothesis 2000   # also the Python property test with 2000 examples
#
# Options: --libfuzzer, --no-sanitize, --seed N, --hypothesis N, --no-hostile-groupings
# (leaves out the int64-overflowing groupings, for a core without check_grouping).
# Environment: FUZZ_BUILD_DIR (default build/fuzz), CXX (compiler for the standalone build).
# Exit status: 0 when no run reported anything; non-zero on any crash, sanitizer report or
# oracle failure (the driver prints "FUZZ FINDING: ..." and aborts; libFuzzer leaves
# crash-* files that `build/fuzz/fuzz_core FILE` replays).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_TO_RUN=45
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then SECONDS_TO_RUN=$1; shift; fi
LIBFUZZER=0
SANITIZE=address,undefined
SEED=$(date +%s)
HYPOTHESIS=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --libfuzzer) LIBFUZZER=1 ;;
    --no-sanitize) SANITIZE= ;;
    --seed) SEED=$2; shift ;;
    --hypothesis) HYPOTHESIS=$2; shift ;;
    --no-hostile-groupings) export SAGEATTN_FUZZ_HOSTILE_GROUPINGS=0 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

status=0
if [[ $LIBFUZZER == 1 ]]; then
  if ! command -v clang++ >/dev/null 2>&1; then
    echo "fuzz.sh: --libfuzzer needs clang++ (apt-get install clang)" >&2
    exit 2
  fi
  BUILD=${FUZZ_BUILD_DIR:-build/fuzz-libfuzzer}
  # tests/fuzz/clang_compat.h: CPU feature names older clang rejects (see that file)
  cmake -S tests/fuzz -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
        -DCMAKE_CXX_FLAGS="-include $ROOT/tests/fuzz/clang_compat.h" -DSAGEATTN_LIBFUZZER=ON -DSAGEATTN_SANITIZE="${SANITIZE:+$SANITIZE,}fuzzer-no-link" >/dev/null
  cmake --build "$BUILD" --target fuzz_core_libfuzzer fuzz_core
  mkdir -p "$BUILD/corpus" "$BUILD/artifacts"
  echo "=== libFuzzer for ${SECONDS_TO_RUN}s (corpus $BUILD/corpus)"
  "$BUILD/fuzz_core_libfuzzer" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -seed="$SEED" -print_final_stats=1 \
      -artifact_prefix="$BUILD/artifacts/" "$BUILD/corpus" || status=1
else
  BUILD=${FUZZ_BUILD_DIR:-build/fuzz}
  cmake -S tests/fuzz -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSAGEATTN_SANITIZE="$SANITIZE" >/dev/null
  cmake --build "$BUILD" --target fuzz_core
  echo "=== fuzz_core for ${SECONDS_TO_RUN}s (seed $SEED, sanitizers: ${SANITIZE:-none})"
  "$BUILD/fuzz_core" --seconds "$SECONDS_TO_RUN" --seed "$SEED" || status=1
fi

if [[ $HYPOTHESIS != 0 ]]; then
  echo "=== hypothesis property test, $HYPOTHESIS examples per property"
  SAGEATTN_FUZZ_EXAMPLES=$HYPOTHESIS python -m pytest -q -p no:cacheprovider "$ROOT/tests/test_fuzz_hypothesis.py" \
      || status=1
fi

if [[ $status != 0 ]]; then
  echo "fuzz.sh: FAILED (see the report above)" >&2
else
  echo "fuzz.sh: no findings"
fi
exit $status
