# Init container check-data-directory of the bundled PostgreSQL (POSIX sh; the image's own postgres binary).
# The entrypoint initialises a new, empty database whenever $PGDATA holds no PG_VERSION. On a volume that
# already holds a database elsewhere (Bitnami's layout: data/ under the volume) or of another major version,
# that looks like total data loss, so this stops the pod first and says what it found and what to do.
# Env: DATA_VOLUME (the volume's mount path), PGDATA (this chart's data directory in it), DATA_PVC (ns/name).
set -eu
volume=${DATA_VOLUME:?DATA_VOLUME is not set}
own=${PGDATA:?PGDATA is not set}
pvc=${DATA_PVC:-the PostgreSQL PVC}
major=$(postgres --version | sed -n 's/^[^0-9]*\([0-9][0-9]*\).*/\1/p')

refuse() {
  printf 'check-data-directory: PostgreSQL NOT started. Volume %s (PVC %s) %s.\n' "$volume" "$pvc" "$1" >&2
  printf 'Starting would initialise a second, empty database in %s beside it (the old data would look lost).\n' "$own" >&2
  printf 'What to do: %s\n' "$2" >&2
  printf 'To discard the old data instead (IT IS DELETED): kubectl delete pvc -n %s %s, then deploy again.\n' \
    "${pvc%%/*}" "${pvc#*/}" >&2
  exit 1
}

version_in() { if [ -r "$1/PG_VERSION" ]; then cat "$1/PG_VERSION"; else printf 'unknown'; fi; }

if [ -e "$volume/data" ]; then
  bitnami="the layout of Bitnami's PostgreSQL image (/bitnami/postgresql/data)"
  refuse "holds data/ (PostgreSQL $(version_in "$volume/data")), $bitnami, not $own" \
    "keep running the old chart's PostgreSQL image on it, or move the data: pg_dumpall with the old chart,
then restore into this chart's database on a new volume."
fi
if [ -e "$volume/PG_VERSION" ]; then
  refuse "holds a PostgreSQL $(version_in "$volume") data directory at its root (the official image's default PGDATA), not in $own" \
    "with PostgreSQL stopped, move the volume's files into a pgdata/ folder on it
(a pod that mounts the PVC, as uid 999), or dump and restore."
fi
if [ -e "$own/PG_VERSION" ]; then
  found=$(version_in "$own")
  if [ "$found" != "$major" ]; then
    refuse "holds a PostgreSQL $found data directory and this image runs PostgreSQL $major, which cannot open it" \
      "set postgresql.image.tag to the image of PostgreSQL $found (e.g. pg$found), or upgrade the data (pg_upgrade, or dump and restore)."
  fi
  printf 'check-data-directory: PostgreSQL %s data directory %s: starting it.\n' "$found" "$own"
  exit 0
fi
printf 'check-data-directory: no database on volume %s yet: PostgreSQL %s initialises %s.\n' "$volume" "$major" "$own"
