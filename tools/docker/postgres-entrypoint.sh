#!/bin/sh
# First start: initdb, the POSTGRES_USER role with POSTGRES_PASSWORD, the POSTGRES_DB database.
# Then `postgres "$@"` in the foreground.
set -eu
: "${POSTGRES_PASSWORD:?set it}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
  [ "$db" = postgres ] || createdb -U "$user" "$db"
  pg_ctl -D "$PGDATA" -w stop >/dev/null
  echo "created role $user and database $db"
fi
exec postgres -D "$PGDATA" "$@"
