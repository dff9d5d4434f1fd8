# The backend's image: `serve` (default) or `worker`, the same image for both.
#   docker build -t al-backend .                            # CPU torch (smaller, any machine)
#   docker build -t al-backend:cuda --build-arg TORCH_VARIANT=cuda .   # GPU workers
# BASE_IMAGE: any Debian-like image whose `python` and `pip` are Python 3.11, e.g. one from a
# registry mirror, or the one tools/docker/base-image.sh builds from Debian's packages.
# (No `# syntax=` line: BuildKit would pull its frontend image from Docker Hub.)
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# cpu: torch and torchvision from the PyTorch CPU index (no CUDA libraries: ~1 GB instead of
#      ~5 GB), at the versions requirements.txt pins. That index publishes other files than PyPI,
#      so these two are pinned by version only; everything else is installed by hash.
# cuda: requirements.txt as locked, every file by hash: PyPI's Linux wheels carry CUDA.
ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt ./
RUN set -eux; \
    case "$TORCH_VARIANT" in \
      cuda) pip install --require-hashes --no-deps -r requirements.txt ;; \
      cpu) \
        torch=$(sed -n 's/^torch==\([^ ]*\) .*/\1/p' requirements.txt); \
        vision=$(sed -n 's/^torchvision==\([^ ]*\) .*/\1/p' requirements.txt); \
        test -n "$torch" && test -n "$vision"; \
        awk '/^[^ #]/ { skip = ($0 ~ /^(torch|torchvision|triton|nvidia-[^=]*|cuda-[^=]*)==/) } \
             !skip' requirements.txt > /tmp/requirements-cpu.txt; \
        pip install --require-hashes --no-deps -r /tmp/requirements-cpu.txt; \
        pip install --no-deps --index-url "$TORCH_CPU_INDEX" "torch==$torch" "torchvision==$vision"; \
        rm /tmp/requirements-cpu.txt ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, not $TORCH_VARIANT" >&2; exit 1 ;; \
    esac; \
    pip check

# Model versions and embeddings (MODEL_DIR) and the torch weights cache (TORCH_HOME) are volumes
# shared by the server and every worker; the image's folders give them their owner.
RUN set -eux; \
    useradd --create-home --uid 10001 --user-group app; \
    mkdir -p /data/models /data/torch; \
    chown -R app:app /data
COPY --chown=app:app ml_backend ./ml_backend
COPY --chown=app:app model ./model
COPY --chown=app:app sampling ./sampling

USER app
ENV PYTHONPATH=/app \
    MODEL_DIR=/data/models \
    TORCH_HOME=/data/torch
VOLUME ["/data/models"]
EXPOSE 9090

# The server answers /health; compose gives workers their own check. With BASIC_AUTH_* set it
# answers 401 to a request without them, which shows it is up just as well. PORT: the port given
# to `serve --port`, when it is not 9090 (host networking).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.error, urllib.request\nurl = 'http://127.0.0.1:%s/health' % os.environ.get('PORT', '9090')\ntry:\n    code = urllib.request.urlopen(url, timeout=4).status\nexcept urllib.error.HTTPError as exc:\n    code = exc.code\nsys.exit(code not in (200, 401))"]

ENTRYPOINT ["python", "-m", "ml_backend"]
CMD ["serve"]
