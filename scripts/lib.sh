# Shared by the scripts: paths, the OS user that runs PostgreSQL, and helpers.
# Sourced, not run.

PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PG_BIN/pg_config
TARGET=${CARGO_TARGET_DIR:-$PWD/target}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# PostgreSQL will not run as root; as root we run it as `postgres`.
if [ "$(id -u)" = 0 ]; then RUNNER=postgres; else RUNNER=$(id -un); fi

# Runs a command as the runner.
as_runner() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$RUNNER" -- "$@"; else "$@"; fi
}

# Installs a release build of the extension into the system PostgreSQL 15,
# with the previous releases' install scripts (extension/sql/releases: so that
# a database can be created at an older version and updated). The old library
# is removed first, so that running servers keep their mapped copy instead of
# crashing on a file rewritten under them.
install_release() {
  say "installing a release build"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" rm -f "$("$PG_CONFIG" --pkglibdir)/ruvector.so"
  (cd extension && cargo pgrx install --release --pg-config "$PG_CONFIG" ${sudo:+--sudo} >/dev/null)
  "${sudo[@]}" install -m 644 extension/sql/releases/ruvector--*.sql "$("$PG_CONFIG" --sharedir)/extension/"
}

as_root_chown() {
  if [ "$(id -u)" = 0 ]; then chown -R "$RUNNER" "$@"; fi
}

# Clusters (demo, integration tests, pgrx tests) live under target/ when the
# runner can reach it; a checkout in a directory other users cannot enter (say
# /root) keeps them in /var/tmp instead.
mkdir -p "$TARGET"
if [ "$(id -u)" = 0 ] && ! as_runner test -x "$TARGET" 2>/dev/null; then
  STATE=/var/tmp/ruvector-$(printf %s "$TARGET" | md5sum | cut -c1-8)
  mkdir -p "$STATE"
  chmod 755 "$STATE"
else
  STATE=$TARGET
fi
CLUSTERS=$STATE/clusters
PGRX_TEST_DATA=$STATE/test-pgdata

# A TCP port on 127.0.0.1 that nothing listens on now, from $1 (default 28900)
# upwards, so that a benchmark never takes the port of a running demo or test.
free_port() {
  local port=${1:-28900}
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || [ -e "/tmp/.s.PGSQL.$port" ]; do
    port=$((port + 1))
  done
  echo "$port"
}
