#!/usr/bin/env bash
# Build a local Python base image for model images, with no container registry: a minimal Debian
# bookworm root filesystem made by mmdebstrap (Python 3.11, venv, CA certificates), imported into the
# local Docker engine with `docker import`. For air-gapped machines and CI, where `python:3.11-slim`
# cannot be pulled. Use it with STUDIO_DOCKER_BASE_IMAGE=<tag>.
#
#   docker/base-image.sh [TAG]      (default studio/python:3.11; `make docker-base-image`)
#
# Needs root (or mmdebstrap's unshare mode), Debian's mmdebstrap, a Debian mirror and a running engine.
set -euo pipefail

tag=${1:-studio/python:3.11}
suite=${STUDIO_BASE_SUITE:-bookworm}
mirror=${STUDIO_BASE_MIRROR:-http://deb.debian.org/debian}

command -v mmdebstrap >/dev/null || { echo "mmdebstrap is not installed (apt-get install mmdebstrap)." >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "No Docker engine answers; start dockerd first." >&2; exit 1; }

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag exists already; remove it (docker rmi $tag) to build it again."
    exit 0
fi

echo "Building $tag from Debian $suite ($mirror)"
# minbase: only Essential packages and apt; python3-venv brings ensurepip (pip and setuptools wheels).
# Documentation, locales and apt lists are left out to keep the image small.
# Imported under a temporary name and given its tag only once it runs Python: a failed build never
# leaves an image that the check above would take for a good one.
staging="$tag-incomplete-$$"
trap 'docker rmi "$staging" >/dev/null 2>&1 || true' EXIT
mmdebstrap --variant=minbase --quiet \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$suite" - "$mirror" |
    docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' \
        --message "Debian $suite with Python, made by mmdebstrap" \
        - "$staging"
docker run --rm --network none "$staging" python3 -c 'import sys, venv; print("Python", sys.version.split()[0])'
docker tag "$staging" "$tag"
echo "Built $tag"
