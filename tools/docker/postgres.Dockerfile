# Stand-in for `postgres:16` where no registry is reachable: Debian's PostgreSQL 15 on the local
# base, with the official image's first-start contract (POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB create the role and database; data in /var/lib/postgresql/data).
ARG BASE_IMAGE=al-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/
USER postgres
VOLUME ["/var/lib/postgresql/data"]
ENTRYPOINT ["postgres-entrypoint.sh"]
CMD ["-c", "listen_addresses=*"]
