#!/bin/sh
# `make docker-check`: build the backend's image from a local base and run it for real (see
# tools/docker_check.py), then the compose stack's wiring (tools/compose_check.py) unless
# COMPOSE=0. Heavy (an image with torch, a Label Studio), so not part of `make test`.
#
# Needs root (or a docker group member) and a Debian/Ubuntu host. No registry is needed: the base
# image is built from Debian's packages. Docker runs without bridge networks (every container on
# the host's network), so nothing gets a private address.
#   BASE_IMAGE     image to build on (default al-base:bookworm, built by base-image.sh if absent)
#   TORCH_VARIANT  cpu (default: needs download.pytorch.org) or cuda (PyPI's wheels only)
#   IMAGE          tag of the image built and checked (default al-backend:check)
set -eu
cd "$(dirname "$0")/../.."
BASE_IMAGE=${BASE_IMAGE:-al-base:bookworm}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
IMAGE=${IMAGE:-al-backend:check}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
dockerd_pid=""
logs=$(mktemp -d)

stop_dockerd() {
  if [ -n "$dockerd_pid" ]; then
    echo "stopping the dockerd this check started (pid $dockerd_pid)"
    $SUDO kill "$dockerd_pid" 2>/dev/null || true
    while $SUDO kill -0 "$dockerd_pid" 2>/dev/null; do sleep 1; done
  fi
}
trap stop_dockerd EXIT
trap 'exit 130' INT TERM

if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends docker.io
  fi
  echo "starting dockerd without bridge networks (log: $logs/dockerd.log)"
  $SUDO sh -c "dockerd --bridge=none --iptables=false --ip6tables=false \
    >'$logs/dockerd.log' 2>&1 & echo \$! >'$logs/dockerd.pid'"
  dockerd_pid=$(cat "$logs/dockerd.pid")
  i=0
  until docker info >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 60 ] || { tail "$logs/dockerd.log"; exit 1; }; sleep 1
  done
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  [ "$BASE_IMAGE" = al-base:bookworm ] || { echo "no image $BASE_IMAGE" >&2; exit 1; }
  command -v mmdebstrap >/dev/null || $SUDO apt-get install -y -q --no-install-recommends mmdebstrap
  echo "building $BASE_IMAGE from Debian's packages"
  $SUDO tools/docker/base-image.sh "$BASE_IMAGE"
fi

echo "building $IMAGE (BASE_IMAGE=$BASE_IMAGE TORCH_VARIANT=$TORCH_VARIANT)"
start=$(date +%s)
# The classic builder: BuildKit is a separate plugin here, and needs no registry either way.
DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg "TORCH_VARIANT=$TORCH_VARIANT" -t "$IMAGE" . >"$logs/build.log" 2>&1 \
  || { tail -30 "$logs/build.log"; exit 1; }
built=$(($(date +%s) - start))
size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE in ${built} s: $((size / 1000000)) MB (base $BASE_IMAGE: \
$(($(docker image inspect --format '{{.Size}}' "$BASE_IMAGE") / 1000000)) MB)"

.venv/bin/python -m tools.docker_check --image "$IMAGE"
if [ "${COMPOSE:-1}" != 0 ]; then
  command -v docker-compose >/dev/null \
    || $SUDO apt-get install -y -q --no-install-recommends docker-compose
  .venv/bin/python -m tools.compose_check --image "$IMAGE" --base "$BASE_IMAGE"
fi
