#!/usr/bin/env bash
# nox for the self-hosted Apple Silicon runner, from the runner's own python3 (>= 3.11).
# actions/setup-python needs admin rights to install Python on a self-hosted macOS runner,
# and Homebrew's Python refuses `pip install` outside a virtual environment (PEP 668), so nox
# goes into a venv of its own whose bin/ the later steps find on PATH.
set -euo pipefail

echo "::group::nox in a virtual environment"
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "::error title=install-nox-venv::the runner's python3 is $(python3 --version 2>&1); the harness needs >= 3.11" >&2
    exit 1
fi
venv="${RUNNER_TEMP:?not on a GitHub Actions runner}/nox-venv"
python3 -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check nox
"$venv/bin/nox" --version
echo "$venv/bin" >>"${GITHUB_PATH:?not on a GitHub Actions runner}"
echo "::endgroup::"
