#!/usr/bin/env bash
# Installs the package the way a user does and checks that the native CPU kernels run: a fresh
# virtual environment with torch 2.13.0, then plain `pip install` (default settings: build
# isolation on) of the clone, of its sdist and of a wheel built from that sdist. pip must
# download no torch. The checks import the package from outside the repository; the first one
# starts with an empty kernel cache and times the compile, the next a warm import.
#
# Usage: .ci/user_install.sh   (from anywhere; needs python3 and network access to PyPI)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv="$work/venv"
export BINARY_NEURONS_CACHE_DIR="$work/kernel-cache" PIP_DISABLE_PIP_VERSION_CHECK=1
unset BINARY_NEURONS_BACKEND

python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q "torch==2.13.0"

# No torch may be collected or downloaded: the one installed above must satisfy the package.
no_torch_download() {
  if grep -Ei '^(Collecting|Downloading) torch([^a-z_-]|$)' "$1"; then
    echo "user_install.sh: pip fetched a torch while installing binary-neurons ($1)" >&2
    exit 1
  fi
}

check() {  # $1: what was installed
  (cd "$work" && "$venv/bin/python" - "$1" <<'PY'
import sys, time
start = time.perf_counter()
import torch
torch_seconds = time.perf_counter() - start
import binary_neurons
from binary_neurons.functional import stochastic_binary
seconds = time.perf_counter() - start
info = binary_neurons.backend_info()
assert info.devices["cpu"] == "native", info
assert binary_neurons.__file__.startswith(sys.prefix), binary_neurons.__file__
a = torch.randn(4096, requires_grad=True)
stochastic_binary(a).sum().backward()
assert a.grad.abs().sum() > 0
print(f"{sys.argv[1]}: native CPU kernels run; import took {seconds:.1f} s "
      f"(torch {torch_seconds:.1f} s); {info.reasons['cpu']}")
PY
  )
}

echo "== pip install <clone>"
"$venv/bin/python" -m pip install "$root" 2>&1 | tee "$work/pip-clone.log"
no_torch_download "$work/pip-clone.log"
check "clone, cold cache"
check "clone, warm cache"

echo "== sdist, and a wheel built from it (python -m build)"
"$venv/bin/python" -m pip install -q build
"$venv/bin/python" -m build --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
ls -l "$work/dist"
for artifact in "$work"/dist/*.whl "$work"/dist/*.tar.gz; do
  "$venv/bin/python" -m pip uninstall -q -y binary-neurons
  "$venv/bin/python" -m pip install "$artifact" 2>&1 | tee "$work/pip-artifact.log"
  no_torch_download "$work/pip-artifact.log"
  check "$(basename "$artifact")"
done
echo "user_install.sh: wheel size $(stat -c %s "$work"/dist/*.whl) bytes"
