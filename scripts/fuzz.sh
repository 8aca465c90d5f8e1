#!/usr/bin/env bash
# A long fuzz run of every fuzz test (tests/test_fuzz_inputs.py, tests/ops/test_fuzz_rle.py); CI runs the same tests with a bounded
# example count. Usage: bash scripts/fuzz.sh [EXAMPLES_PER_TEST]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
export FASTCLIPSEG_FUZZ_EXAMPLES="${1:-20000}"
echo "fuzzing with $FASTCLIPSEG_FUZZ_EXAMPLES examples per test"
exec "${PYTHON:-python3}" -m pytest tests/test_fuzz_inputs.py tests/ops/test_fuzz_rle.py -q -p no:cacheprovider
