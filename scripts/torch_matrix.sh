#!/usr/bin/env bash
# The built wheel beside the oldest torch the package declares and beside the newest pip
# can get, each in its own venv: `python -m sageattention check` and the test suite run
# against the installed wheel (not the source tree).
#
#   bash scripts/torch_matrix.sh [WHEEL]
#
# WHEEL: a built sageattention wheel; without it one is built from this checkout with
#   `pip wheel --no-build-isolation` (needs scikit-build-core, apache-tvm-ffi, ninja, cmake).
# Environment:
#   TORCH_MATRIX      entries separated by ';', each "PYTHON TORCH_SPEC", e.g.
#                     "python3.12 torch>=2.3,<2.4;python3.11 torch". Default: the oldest
#                     declared minor release and the newest, both with $TORCH_MATRIX_PYTHON.
#   TORCH_MATRIX_PYTHON  interpreter for the default entries (default: python3)
#   TORCH_MATRIX_DIR  where the venvs live (default: /tmp/sageattn-torch-matrix); a venv
#                     whose torch already satisfies its spec is reused, so reruns skip
#                     the multi-GB download.
#   TORCH_MATRIX_PYTEST_ARGS  extra pytest arguments (default: none)
# Exit status: 0 when every entry passes check and the suite, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
matrix_dir=${TORCH_MATRIX_DIR:-/tmp/sageattn-torch-matrix}
py_default=${TORCH_MATRIX_PYTHON:-python3}
mkdir -p "$matrix_dir"

# pip, minus the index warnings of this machine's local mirrors; keeps pip's exit status.
quiet_pip() {
  "$@" 2>&1 | grep -v "^WARNING: Location"
  return "${PIPESTATUS[0]}"
}

# The declared lower bound, e.g. "torch>=2.3" -> the 2.3.x series.
floor=$(sed -n 's/^ *"torch>=\([0-9][0-9]*\.[0-9][0-9]*\)".*/\1/p' pyproject.toml | head -n1)
if [ -z "$floor" ]; then
  echo "torch_matrix: cannot read the torch lower bound from pyproject.toml" >&2
  exit 2
fi
next_minor="${floor%%.*}.$(( ${floor#*.} + 1 ))"
matrix=${TORCH_MATRIX:-"$py_default torch>=$floor,<$next_minor;$py_default torch"}

wheel=${1:-}
if [ -z "$wheel" ]; then
  dist="$matrix_dir/dist"
  rm -rf "$dist"
  echo "=== building the wheel"
  python -m pip wheel -q --no-deps --no-build-isolation . -w "$dist" || exit 1
  wheel=$(ls "$dist"/sageattention-*.whl | head -n1)
fi
wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
echo "=== wheel: $(basename "$wheel")"

status=0
summary=()
IFS=';' read -r -a entries <<< "$matrix"
for entry in "${entries[@]}"; do
  entry=$(echo "$entry" | xargs)
  [ -z "$entry" ] && continue
  python_bin=${entry%% *}
  torch_spec=${entry#* }
  name=$(echo "$python_bin-$torch_spec" | tr -c 'A-Za-z0-9.\n' '_')
  venv="$matrix_dir/$name"
  echo "=== [$python_bin, $torch_spec] venv $venv"
  if ! command -v "$python_bin" > /dev/null; then
    echo "    skipped: $python_bin is not on PATH"
    summary+=("SKIP  $entry ($python_bin not found)")
    continue
  fi
  [ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv" || { summary+=("FAIL  $entry (venv)"); status=1; continue; }
  vpy="$venv/bin/python"
  if ! "$vpy" - "$torch_spec" <<'EOF' 2> /dev/null
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
req = Requirement(sys.argv[1])
sys.exit(0 if req.specifier.contains(version("torch").split("+")[0], prereleases=True) else 1)
EOF
  then
    start=$SECONDS
    quiet_pip "$vpy" -m pip install -q --upgrade pip packaging
    if ! quiet_pip "$vpy" -m pip install -q "$torch_spec"; then
      summary+=("FAIL  $entry (pip could not install $torch_spec)"); status=1; continue
    fi
    echo "    torch installed in $((SECONDS - start)) s"
  else
    echo "    torch already satisfies $torch_spec: reusing the venv"
  fi
  # The wheel with its declared dependencies (torch already there), then the test extras
  # without letting them move torch.
  if ! quiet_pip "$vpy" -m pip install -q --force-reinstall --no-deps "$wheel" ||
     ! quiet_pip "$vpy" -m pip install -q "$wheel" "pytest>=7" "hypothesis>=6" "diffusers>=0.35"; then
    summary+=("FAIL  $entry (the wheel or the test extras did not install)"); status=1; continue
  fi
  tv=$("$vpy" -c "import torch; print(torch.__version__)" 2>/dev/null || echo "?")
  pv=$("$vpy" -c "import platform; print(platform.python_version())")
  label="python $pv, torch $tv"
  echo "    $label"
  # Run from inside the venv directory, so `import sageattention` finds the installed
  # wheel and not this checkout's sources.
  if (cd "$venv" && "$vpy" -m sageattention check); then
    check=ok
  else
    check=FAIL; status=1
  fi
  # shellcheck disable=SC2086
  if (cd "$venv" && "$vpy" -m pytest -q -p no:cacheprovider --rootdir "$repo" ${TORCH_MATRIX_PYTEST_ARGS:-} \
        "$repo/tests" 2>&1 | tail -n 15); then
    suite=ok
  else
    suite=FAIL; status=1
  fi
  summary+=("$([ "$check$suite" = okok ] && echo "PASS" || echo "FAIL")  $label: check $check, suite $suite")
done

echo "=== torch matrix summary"
for line in "${summary[@]}"; do echo "    $line"; done
exit $status
