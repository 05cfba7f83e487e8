# Shared by the scripts: paths, the OS user that runs PostgreSQL, and helpers.
# Sourced, not run.

PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PG_BIN/pg_config
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
# Clusters started by the demo and by the integration tests.
CLUSTERS=$TARGET/clusters

# PostgreSQL will not run as root; as root we run it as `postgres`.
if [ "$(id -u)" = 0 ]; then RUNNER=postgres; else RUNNER=$(id -un); fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as the runner.
as_runner() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$RUNNER" -- "$@"; else "$@"; fi
}

as_root_chown() {
  if [ "$(id -u)" = 0 ]; then chown -R "$RUNNER" "$@"; fi
}

# The runner must be able to enter every directory above its clusters.
check_runner_can_reach() {
  as_runner test -w "$1" || die "user $RUNNER cannot write $1: the checkout must be in a directory every user can enter (chmod o+x on its parents), or set CARGO_TARGET_DIR to one"
}
