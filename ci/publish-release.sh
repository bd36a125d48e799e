#!/usr/bin/env bash
# Usage: ci/publish-release.sh PATH...
#
# Attaches PATHs to the GitHub release of the pushed tag ($GITHUB_REF_NAME), creating the
# release (notes generated from the commits) when the tag has none yet; a rerun replaces the
# assets. A folder (a downloaded report artifact) is attached as FOLDER.tar.gz.
# Needs the gh CLI, GH_TOKEN with contents: write, and GH_REPO.
set -euo pipefail

[ $# -gt 0 ] || { echo "usage: $0 PATH..." >&2; exit 2; }
tag=${GITHUB_REF_NAME:?run this on a tag push}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

assets=()
for path in "$@"; do
    if [ -d "$path" ]; then
        archive="$scratch/$(basename "$path").tar.gz"
        tar -C "$(dirname "$path")" -czf "$archive" "$(basename "$path")"
        assets+=("$archive")
    elif [ -f "$path" ]; then
        assets+=("$path")
    else
        echo "::error title=publish-release::$path does not exist" >&2
        exit 1
    fi
done

echo "::group::release $tag: ${assets[*]}"
if ! gh release view "$tag" >/dev/null 2>&1; then
    gh release create "$tag" --verify-tag --title "$tag" --generate-notes
fi
gh release upload "$tag" --clobber "${assets[@]}"
echo "::endgroup::"
