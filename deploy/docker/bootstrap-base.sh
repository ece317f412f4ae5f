#!/usr/bin/env bash
# Make a Debian 12 (bookworm) base image with Python 3.11 from Debian's own packages, for
# building the latentwire images with no container registry: mmdebstrap fetches .deb files
# from a Debian mirror, `podman import` turns the root filesystem into an image.
#
#   deploy/docker/bootstrap-base.sh [IMAGE] [MIRROR]
#
# IMAGE defaults to localhost/bookworm-python:3.11, MIRROR to http://deb.debian.org/debian
# (or a local mirror / apt-cacher). Needs: mmdebstrap, podman (Debian: apt-get install
# mmdebstrap podman). Takes about 1.5 min and ~150 MB. Then build with
#   deploy/docker/build.sh --base localhost/bookworm-python:3.11
set -euo pipefail

image="${1:-localhost/bookworm-python:3.11}"
mirror="${2:-http://deb.debian.org/debian}"

for tool in mmdebstrap podman; do
    command -v "$tool" > /dev/null || { echo "bootstrap-base.sh: error: $tool not found" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# minbase: dpkg, apt, coreutils, bash; python3-venv brings ensurepip's wheels for the build
# stage. Docs, man pages and locales are left out; apt's lists are emptied, as the official
# slim images do.
mmdebstrap --variant=minbase --include=python3,python3-venv \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$work/rootfs.tar" "$mirror"

podman import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$work/rootfs.tar" "$image"
podman image ls "$image"
