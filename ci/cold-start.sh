#!/usr/bin/env bash
# Usage: ci/cold-start.sh [COMMIT]   (default HEAD)
#
# README's main command as a new user meets it: a fresh clone of COMMIT, a new virtual
# environment, an empty pip cache, an empty harness cache (ccache, upstream, models, text,
# base logits) and a build directory of its own, then `python -m pip install nox && nox`,
# timed. Prints the time of each nox session and the whole; the run's folder (a few GB) is
# removed unless KEEP=1. docs/measurements.md has the last result (14:41 on 2 cores).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
commit=${1:-HEAD}
work=$(mktemp -d "${TMPDIR:-/tmp}/tqh-cold.XXXXXX")
if [ "${KEEP:-0}" != 1 ]; then
    trap 'rm -rf "$work"' EXIT
fi

git clone -q "$repo" "$work/repo"
git -C "$work/repo" checkout -q "$commit"
python3 -m venv "$work/venv"
export TQH_CACHE_DIR="$work/cache" PIP_CACHE_DIR="$work/pip-cache"
unset TQH_BUILD_DIR
start=$(date +%s)
(
    cd "$work/repo"
    . "$work/venv/bin/activate"
    python -m pip install --quiet --disable-pip-version-check nox
    nox
) 2>&1 | tee "$work/cold-start.log" | grep -E '^nox > (Session|Ran|\*)'
status=${PIPESTATUS[0]}
kept=""
[ "${KEEP:-0}" = 1 ] && kept=" (log: $work/cold-start.log)"
echo "cold start of $(git -C "$work/repo" rev-parse --short HEAD): exit $status in $(( $(date +%s) - start )) s$kept"
exit "$status"
