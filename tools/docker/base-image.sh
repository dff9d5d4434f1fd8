#!/bin/sh
# Builds a minimal Debian bookworm image with Python 3.11 in a virtual environment on PATH, from
# Debian's own packages, for machines that cannot pull `python:3.11-slim-bookworm` (no registry,
# or only a Debian mirror). The backend's Dockerfile takes it as BASE_IMAGE:
#   tools/docker/base-image.sh al-base:bookworm
#   docker build --build-arg BASE_IMAGE=al-base:bookworm -t al-backend:cpu .
# Needs root, mmdebstrap and a reachable Debian mirror (MIRROR, default deb.debian.org).
# The machine's own extra CA certificates (EXTRA_CA_DIR, default /usr/local/share/ca-certificates)
# are trusted in the image too, and pip uses the system bundle: behind a TLS-inspecting proxy,
# `pip install` in `docker build` fails otherwise.
set -eu
tag=${1:-al-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
extra_ca=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# python3.11-venv brings ensurepip, so the venv has pip; the venv keeps pip off Debian's
# externally-managed system Python, as the official image keeps it in /usr/local.
mmdebstrap --variant=minbase --format=tar \
  --include=ca-certificates,python3.11,python3.11-venv \
  --customize-hook="if [ -d '$extra_ca' ]; then cp -r '$extra_ca'/. \"\$1\"/usr/local/share/ca-certificates/; fi" \
  --customize-hook='chroot "$1" update-ca-certificates' \
  --customize-hook='chroot "$1" python3.11 -m venv /opt/venv' \
  --customize-hook='chroot "$1" env PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/venv/bin/pip install -q --no-cache-dir --upgrade pip' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$out/rootfs.tar" "$mirror"
docker import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python"]' \
  "$out/rootfs.tar" "$tag"
