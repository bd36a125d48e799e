#!/usr/bin/env bash
# Usage: ci/package-tools.sh [--require-relocatable] BUILD_DIR OUTPUT.tar.gz
#
# Packs what `nox -s build` left in BUILD_DIR/bin (llama-perplexity, llama-bench,
# test-backend-ops, their shared libraries, and default.metallib when the Metal library is not
# embedded) with BUILD_DIR/tqh-configure.json, the record of what configured the build, as
# NAME/bin/... and NAME/tqh-configure.json, then runs the packed llama-perplexity from a
# scratch directory.
#
# That run still succeeds when the programs find their libraries through an absolute rpath
# into BUILD_DIR, which only exists on the machine that built them. --require-relocatable
# fails unless every packed binary that has an rpath has one relative to itself
# (@loader_path on macOS, $ORIGIN on Linux); release builds pass -D CMAKE_BUILD_RPATH=...
# to get it. Without the option such binaries are listed as a warning.
set -euo pipefail

usage() {
    echo "usage: $0 [--require-relocatable] BUILD_DIR OUTPUT.tar.gz" >&2
    exit 2
}

is_binary() {
    # ELF, or Mach-O (thin 64-bit in either byte order, or universal).
    case "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" in
        7f454c46 | cffaedfe | feedfacf | cafebabe) return 0 ;;
        *) return 1 ;;
    esac
}

rpaths() {
    if [ "$(uname -s)" = Darwin ]; then
        otool -l "$1" | awk '$1 == "cmd" && $2 == "LC_RPATH" { getline; getline; print $2 }'
    else
        readelf -d "$1" | sed -n 's/.*(R[UN]*PATH).*\[\(.*\)\]$/\1/p' | tr ':' '\n'
    fi
}

require_relocatable=0
if [ "${1:-}" = "--require-relocatable" ]; then
    require_relocatable=1
    shift
fi
[ $# -eq 2 ] || usage
build=$1
output=$2
case "$output" in
    *.tar.gz) name=$(basename "$output" .tar.gz) ;;
    *) usage ;;
esac

for needed in "$build/tqh-configure.json" "$build/bin/llama-perplexity" \
    "$build/bin/llama-bench" "$build/bin/test-backend-ops"; do
    if [ ! -e "$needed" ]; then
        echo "::error title=package-tools::$needed is missing; run \`nox -s build\` first" >&2
        exit 1
    fi
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/stage/$name/bin" "$(dirname "$output")"
output="$(cd "$(dirname "$output")" && pwd)/$(basename "$output")"

# *.air are the Metal compiler's intermediate objects, linked into default.metallib.
tar -C "$build/bin" --exclude '*.air' -cf - . | tar -C "$scratch/stage/$name/bin" -xf -
cp "$build/tqh-configure.json" "$scratch/stage/$name/"

echo "::group::rpaths of the packed binaries"
absolute_only=""
for file in "$scratch/stage/$name/bin"/*; do
    if [ -L "$file" ] || [ ! -f "$file" ] || ! is_binary "$file"; then
        continue
    fi
    found=$(rpaths "$file" | sed '/^$/d')
    [ -n "$found" ] || continue
    echo "$(basename "$file"): $(echo "$found" | tr '\n' ' ')"
    # shellcheck disable=SC2016  # $ORIGIN is the literal the dynamic loader expands
    case "$found" in
        *'@loader_path'* | *'@executable_path'* | *'$ORIGIN'*) ;;
        *) absolute_only="$absolute_only $(basename "$file")" ;;
    esac
done
echo "::endgroup::"
if [ -n "$absolute_only" ]; then
    message="not relocatable (only absolute rpaths, into the build directory):$absolute_only"
    if [ "$require_relocatable" -eq 1 ]; then
        echo "::error title=package-tools::$message" >&2
        exit 1
    fi
    echo "::warning title=package-tools::$message" >&2
fi

echo "::group::pack $build into $output"
tar -C "$scratch/stage" -czf "$output" "$name"
tar -tzf "$output"
echo "::endgroup::"

echo "::group::run the packed llama-perplexity"
mkdir "$scratch/unpacked"
tar -C "$scratch/unpacked" -xzf "$output"
"$scratch/unpacked/$name/bin/llama-perplexity" --version
echo "::endgroup::"
echo "wrote $output"
