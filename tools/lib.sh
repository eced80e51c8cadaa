# SPDX-License-Identifier: MIT
# Helpers sourced by the scripts in tools/: logging, running as root or as the
# unprivileged user that owns test clusters, free ports, PostgreSQL binaries.

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: ${*:-failed}"; exit 1; }

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

# The OS user that runs PostgreSQL servers (initdb refuses to run as root).
cluster_user() {
    if [[ $EUID -ne 0 ]]; then id -un; return; fi
    if id -u postgres >/dev/null 2>&1; then echo postgres; return; fi
    id -u pgstore >/dev/null 2>&1 ||
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin pgstore >/dev/null 2>&1 ||
        id -u pgstore >/dev/null 2>&1 || die "could not create user pgstore"
    echo pgstore
}

run_as_cluster_user() {
    if [[ $EUID -eq 0 ]]; then runuser -u "$(cluster_user)" -- "$@"; else "$@"; fi
}

# A random TCP port in 20000-45000 that nothing listens on at 127.0.0.1.
free_port() {
    local port _
    for _ in {1..200}; do
        port=$((20000 + RANDOM % 25001))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"; return 0
        fi
    done
    die "no free TCP port found on 127.0.0.1"
}

# Directory of initdb/pg_ctl: $PGSTORE_PGBIN, else the newest Debian one.
pg_bindir() {
    local dir
    if [[ -n ${PGSTORE_PGBIN:-} ]]; then echo "$PGSTORE_PGBIN"; return; fi
    dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    [[ -x $dir/initdb ]] || dir=$(dirname "$(command -v initdb 2>/dev/null || echo /)")
    [[ -x $dir/initdb ]] || die "PostgreSQL server binaries not found (run tools/deps.sh)"
    echo "$dir"
}
