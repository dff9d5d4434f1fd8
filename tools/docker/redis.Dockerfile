# Stand-in for `redis:7.4` where no registry is reachable: Debian's redis-server (7.0) on the
# local base. Same contract as the official image: data in /data, `redis-server` on PATH.
ARG BASE_IMAGE=al-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
VOLUME ["/data"]
CMD ["redis-server", "--dir", "/data"]
