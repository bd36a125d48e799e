#!/usr/bin/env bash
# Usage: ci/debian-text-deb.sh OUT_DIR
#
# Writes the text package pinned in models.toml ([text]: package and version) into OUT_DIR,
# taken with `apt-get download` inside Debian's own container image, whose package sources
# are Debian's. A runner's own apt (Ubuntu) serves Ubuntu's rebuild of the package, other
# bytes than the pin's, and macOS has no apt; `nox -s text -- --deb OUT_DIR` then checks the
# file against the pin and puts it into the harness cache. Needs docker (GitHub's Linux
# runners have it).
set -euo pipefail

out=${1:?usage: ci/debian-text-deb.sh OUT_DIR}
read -r package version < <(python3 -c '
import tomllib
pin = tomllib.load(open("models.toml", "rb"))["text"]
print(pin["package"], pin["version"])')
mkdir -p "$out"
# bookworm holds the pinned version; the image runs as root, so it may update its lists.
docker run --rm -v "$(cd "$out" && pwd):/out" -w /out debian:bookworm-slim \
    sh -c "apt-get update -qq && apt-get download -qq '$package=$version' && chown $(id -u):$(id -g) ./*.deb"
ls -l "$out"
