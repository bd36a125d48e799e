#!/usr/bin/env bash
# Usage: ci/backend-ops.sh [BUILD_DIR [DEVICE]]
#   ci/backend-ops.sh build/metal MTL0   (the default; `nox -s build -- --backend metal`)
#   ci/backend-ops.sh build/cuda CUDA0   (`nox -s build -- --backend cuda`)
#
# Runs test-backend-ops on a GPU device for every turbo case (patches/0004: the write path,
# the read paths and flash attention; patches/0014, 0020, 0021: the graphs around the attention
# rotation that CUDA fuses, the K/V write, the output's rotation back, RoPE with the rotation
# of Q and K), each compared with the CPU backend, one op at a time.
#
# test-backend-ops exits 0 when it tested nothing: a -b that names no device skips every
# device, and a case the backend does not support is skipped too. So each op must also show
# the device tested, a non-empty "N/N tests passed", and no "not supported" case other than
# those ci/backend-ops-unsupported.txt lists for the device (ggml runs them on the CPU).
set -euo pipefail

build=${1:-build/metal}
# ggml names devices MTL0, CUDA0, ...; `-b Metal` or `-b CUDA` would match none of them.
device=${2:-MTL0}
binary="$build/bin/test-backend-ops"
# A case line, not a log line such as Metal's "the tensor API is not supported ...".
unsupported_case='^  [A-Z0-9_]+\(.*\): not supported'
allow_list="$(dirname "$0")/backend-ops-unsupported.txt"

# The cases of op the allow list leaves unsupported on this device: one extended regular
# expression (alternatives joined by |), empty when it lists none.
allowed_unsupported() {
    [ -f "$allow_list" ] || return 0
    awk -v dev="$device" -v op="$1" \
        '$1 !~ /^#/ && NF >= 3 && index(dev, $1) == 1 && $2 == op { print $3 }' "$allow_list" | paste -sd '|' -
}

if [ ! -x "$binary" ]; then
    echo "::error title=backend-ops::$binary is missing; build it with \`nox -s build -- --backend metal\` (or cuda)" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=""
ops=" SET_ROWS HADAMARD_SET_ROWS GET_ROWS CPY FLASH_ATTN_EXT FLASH_ATTN_EXT_HADAMARD ROPE_HADAMARD"
for op in $ops; do
    echo "::group::$op, turbo cases, on $device"
    status=0
    "$binary" test -b "$device" -o "$op" -p turbo >"$log" 2>&1 || status=$?
    cat "$log"
    echo "::endgroup::"

    unsupported=$(grep -E "$unsupported_case" "$log" || true)
    unexpected=$unsupported
    allowed=$(allowed_unsupported "$op")
    if [ -n "$allowed" ]; then
        unexpected=$(printf '%s\n' "$unsupported" | grep -Ev "$allowed" || true)
    fi

    problem=""
    if [ "$status" -ne 0 ]; then
        problem="exit status $status"
    elif ! grep -q "^Backend [0-9]*/[0-9]*: $device\$" "$log"; then
        problem="no device $device (not a build for it, or no such GPU)"
    elif grep -A1 "^Backend [0-9]*/[0-9]*: $device\$" "$log" | grep -q '^  Skipping'; then
        problem="device $device was skipped"
    elif [ -n "$unexpected" ]; then
        problem="$(printf '%s\n' "$unexpected" | grep -c .) case(s) not supported on $device"
    else
        if [ -n "$unsupported" ]; then
            echo "$(printf '%s\n' "$unsupported" | grep -c .) case(s) not supported on $device, as $allow_list lists"
        fi
        passed=$(sed -n 's/^ *\([0-9]*\)\/\([0-9]*\) tests passed$/\1 \2/p' "$log" | head -n 1)
        read -r ok total <<<"${passed:-0 0}"
        if [ "$total" -eq 0 ]; then
            problem="no turbo case ran"
        elif [ "$ok" -ne "$total" ]; then
            problem="$ok/$total cases passed"
        fi
    fi
    if [ -n "$problem" ]; then
        echo "::error title=test-backend-ops $op on $device::$problem" >&2
        failed="$failed $op"
    fi
done

if [ -n "$failed" ]; then
    echo "test-backend-ops failed on $device for:$failed" >&2
    exit 1
fi
echo "test-backend-ops: every turbo case of$ops passed on $device (or is listed as unsupported there)"
