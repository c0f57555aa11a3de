#!/bin/bash
# One site of drctl's Docker two-site lab: PostgreSQL in the background, sshd in the foreground.
#
# First start (an empty data directory): a site whose SITE_ROLE is primary runs initdb; a
# standby copies its peer with pg_basebackup and streams from it. Every later start runs what
# the data directory holds: after a switchover site B is the primary and site A its standby,
# and a restarted container keeps it that way. PostgreSQL runs as the OS user postgres under
# pg_ctl, as drctl finds it on a real host, so drctl's own pg_ctl stop/start work; stopping the
# container stops PostgreSQL cleanly first.
#
# Addresses. drctl on the Docker host reaches both servers on 127.0.0.1, each site on its own
# port (5432 and 5433 by default, published under the same numbers), and writes those same
# addresses into a rejoined standby's primary_conninfo. So each site listens on its own port
# inside the container too, and forwards 127.0.0.1:<peer port> to the peer site (the peer
# relay): "host=127.0.0.1 port=5433" means site B on the Docker host and inside site A alike.
# From inside the compose network (the worker) the sites are site-a:5432 and site-b:5433.
#
# Environment (docker-compose.yml sets it):
#   SITE_NAME          site-a | site-b (names this site in logs and its published host key)
#   NODE_NAME          the drctl node it is (pg1, pg2): a standby's application_name
#   SITE_ROLE          primary | standby: what the site becomes at first start only
#   PG_PORT            the port PostgreSQL listens on, inside the container and published
#   PEER_HOST          the other site's service name (empty: no peer relay)
#   PEER_PORT          the other site's PG_PORT
#   DRCTL_PG_PASSWORD  the password of the database user postgres (written to ~/.pgpass for
#                      replication and pg_rewind; never to a log)
#   PGDATA, PG_BIN, PG_LOG, PG_OS_USER, STANDBY_WAIT (seconds to wait for the peer),
#   DRCTL_KEY_SOURCE, DRCTL_HOST_KEYS_OUT (where the key is read and the host key published)
set -euo pipefail

: "${SITE_NAME:?SITE_NAME is required (site-a or site-b)}"
: "${SITE_ROLE:?SITE_ROLE is required (primary or standby: the role at first start)}"
: "${DRCTL_PG_PASSWORD:?DRCTL_PG_PASSWORD is required (the password of the database user postgres)}"
NODE_NAME=${NODE_NAME:-$SITE_NAME}
PG_PORT=${PG_PORT:-5432}
PEER_HOST=${PEER_HOST:-}
PEER_PORT=${PEER_PORT:-}
PG_OS_USER=${PG_OS_USER:-postgres}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/${PG_MAJOR:-17}/bin}
PGDATA=${PGDATA:-/var/lib/postgresql/data}
PGDATA=${PGDATA%/}
PG_LOG=${PG_LOG:-$PGDATA.log} # drctl's default log file for pg_ctl start: <data_dir>.log
STANDBY_WAIT=${STANDBY_WAIT:-300}
DB_USER=postgres
KEY_SOURCE=${DRCTL_KEY_SOURCE:-/etc/drctl/drctl.pub}       # drctl's key, mounted by compose
HOST_KEYS_OUT=${DRCTL_HOST_KEYS_OUT:-/run/drctl/host-keys} # read by the worker for known_hosts

PG_HOME=$(getent passwd "$PG_OS_USER" | cut -d: -f6)
child=""

log() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S)" "$SITE_NAME" "$*" >&2; }

# A command as the database owner, with a clean environment (no password variables).
as_pg() {
    runuser -u "$PG_OS_USER" -- env -i HOME="$PG_HOME" PATH=/usr/bin:/bin LANG=C.UTF-8 "$@"
}

# Write stdin to a file owned by the database owner, mode 0600.
write_owned() {
    local file=$1
    cat >"$file.tmp"
    chown "$PG_OS_USER:" "$file.tmp"
    chmod 600 "$file.tmp"
    mv -f "$file.tmp" "$file"
}

install_drctl_key() {
    local ssh_dir=$PG_HOME/.ssh
    install -d -o "$PG_OS_USER" -g "$PG_OS_USER" -m 700 "$ssh_dir"
    if [ -s "$KEY_SOURCE" ]; then
        write_owned "$ssh_dir/authorized_keys" <"$KEY_SOURCE"
        log "drctl's public key from $KEY_SOURCE may log in as $PG_OS_USER"
    elif [ -s "$ssh_dir/authorized_keys" ]; then
        log "drctl's public key from the image (build arg DRCTL_PUBLIC_KEY) may log in as $PG_OS_USER"
    else
        log "WARNING: no public key for drctl (mount one at $KEY_SOURCE or build with" \
            "DRCTL_PUBLIC_KEY): SSH logins will fail"
    fi
}

publish_host_key() {
    if [ -d "$HOST_KEYS_OUT" ]; then
        cp /etc/ssh/ssh_host_ed25519_key.pub "$HOST_KEYS_OUT/$SITE_NAME.pub.tmp"
        chmod 644 "$HOST_KEYS_OUT/$SITE_NAME.pub.tmp"
        mv -f "$HOST_KEYS_OUT/$SITE_NAME.pub.tmp" "$HOST_KEYS_OUT/$SITE_NAME.pub"
    fi
    log "host key: $(ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub)"
}

# ~/.pgpass of the database owner: the standby's WAL receiver, pg_basebackup and pg_rewind
# (run by drctl over SSH) authenticate with it. ':' and '\' are escaped as .pgpass wants.
write_pgpass() {
    local escaped
    escaped=$(printf '%s' "$DRCTL_PG_PASSWORD" | sed 's/[\\:]/\\&/g')
    printf '*:*:*:%s:%s\n' "$DB_USER" "$escaped" | write_owned "$PG_HOME/.pgpass"
}

start_peer_relay() {
    if [ -z "$PEER_HOST" ] || [ -z "$PEER_PORT" ]; then
        log "no peer relay (PEER_HOST or PEER_PORT is empty)"
        return
    fi
    runuser -u nobody -- socat -lp peer-relay \
        "TCP4-LISTEN:$PEER_PORT,bind=127.0.0.1,reuseaddr,fork" \
        "TCP:$PEER_HOST:$PEER_PORT,connect-timeout=3" &
    log "peer relay: 127.0.0.1:$PEER_PORT here is $PEER_HOST:$PEER_PORT"
}

server_conf() {
    cat <<'EOF'

# ---- drctl Docker lab ----
# The port is in postgresql.auto.conf: it is this site's own, and pg_basebackup and pg_rewind
# copy the rest of the configuration from the other site.
listen_addresses = '*'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_log_hints = on
wal_keep_size = '256MB'
wal_retrieve_retry_interval = '200ms'
wal_receiver_status_interval = '1s'
shared_buffers = '64MB'
max_connections = 50
EOF
}

hba_conf() {
    cat <<'EOF'
# drctl Docker lab: peer on the local socket, passwords (SCRAM) over TCP. The ports are published
# on the Docker host's 127.0.0.1 only.
local   all          all                 peer
local   replication  all                 peer
host    all          all        all      scram-sha-256
host    replication  all        all      scram-sha-256
EOF
}

# postgresql.auto.conf with this site's port and, for a standby, its primary_conninfo; what
# else it holds is kept.
write_auto_conf() {
    local conninfo=$1 file=$PGDATA/postgresql.auto.conf kept=""
    if [ -f "$file" ]; then
        kept=$(grep -Ev '^[[:space:]]*(port|primary_conninfo|primary_slot_name)[[:space:]]*=' \
            "$file" || true)
    fi
    {
        [ -z "$kept" ] || printf '%s\n' "$kept"
        printf 'port = %s\n' "$PG_PORT"
        if [ -n "$conninfo" ]; then
            printf "primary_conninfo = '%s'\n" "$conninfo"
        fi
    } | write_owned "$file"
}

init_primary() {
    local pwfile
    log "first start: initdb in $PGDATA (primary)"
    pwfile=$(mktemp)
    printf '%s\n' "$DRCTL_PG_PASSWORD" >"$pwfile"
    chown "$PG_OS_USER:" "$pwfile"
    as_pg "$PG_BIN/initdb" --pgdata="$PGDATA" --username="$DB_USER" --pwfile="$pwfile" \
        --auth-local=peer --auth-host=scram-sha-256 --data-checksums \
        --encoding=UTF8 --no-locale >/dev/null
    rm -f "$pwfile"
    server_conf >>"$PGDATA/postgresql.conf"
    hba_conf | write_owned "$PGDATA/pg_hba.conf"
    write_auto_conf ""
}

init_standby() {
    local waited=0
    : "${PEER_PORT:?a standby needs PEER_PORT, the port of the primary}"
    log "first start: waiting for the primary on 127.0.0.1:$PEER_PORT (${PEER_HOST:-no relay})"
    until as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PEER_PORT" -t 2; do
        waited=$((waited + 2))
        if [ "$waited" -ge "$STANDBY_WAIT" ]; then
            log "the primary did not answer within ${STANDBY_WAIT}s"
            exit 1
        fi
        sleep 2
    done
    log "first start: pg_basebackup from 127.0.0.1:$PEER_PORT into $PGDATA (standby)"
    as_pg "$PG_BIN/pg_basebackup" --pgdata="$PGDATA" --host=127.0.0.1 --port="$PEER_PORT" \
        --username="$DB_USER" --wal-method=stream --checkpoint=fast --no-password
    write_auto_conf "host=127.0.0.1 port=$PEER_PORT user=$DB_USER application_name=$NODE_NAME"
    : | write_owned "$PGDATA/standby.signal"
}

start_postgres() {
    # This container's PID namespace is new: a postmaster.pid left by the last run (a crash,
    # a kill -9 drill, docker kill) names a process that is gone, or another one by chance.
    if [ -f "$PGDATA/postmaster.pid" ]; then
        log "removing the stale postmaster.pid of the container's last run"
        rm -f "$PGDATA/postmaster.pid"
    fi
    # drctl's own pg_ctl start (over SSH, as the database owner) appends to the same log.
    touch "$PG_LOG"
    chown "$PG_OS_USER:" "$PG_LOG"
    log "starting PostgreSQL on port $PG_PORT ($([ -f "$PGDATA/standby.signal" ] &&
        echo standby || echo primary)), log $PG_LOG"
    if ! as_pg "$PG_BIN/pg_ctl" start --pgdata="$PGDATA" --log="$PG_LOG" --wait --timeout=300 \
        >/dev/null; then
        log "PostgreSQL did not start; the end of $PG_LOG:"
        tail -n 30 "$PG_LOG" >&2 || true
        return 1
    fi
}

stop_postgres() {
    if [ -f "$PGDATA/postmaster.pid" ]; then
        log "stopping PostgreSQL (fast)"
        as_pg "$PG_BIN/pg_ctl" stop --pgdata="$PGDATA" --mode=fast --wait --timeout=25 \
            >/dev/null || log "pg_ctl stop failed"
    fi
}

# shellcheck disable=SC2317  # called by the trap
on_signal() {
    log "container stopping"
    stop_postgres
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" || true
    fi
    exit 0
}

main() {
    trap on_signal TERM INT
    install -d -o "$PG_OS_USER" -g "$PG_OS_USER" -m 2775 /var/run/postgresql
    install -d -m 755 /run/sshd
    install_drctl_key
    publish_host_key
    write_pgpass
    start_peer_relay

    install -d -o "$PG_OS_USER" -g "$PG_OS_USER" -m 700 "$PGDATA"
    local first_start=no
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        if [ -n "$(ls -A "$PGDATA")" ]; then
            log "$PGDATA is not empty but holds no PostgreSQL cluster: refusing to touch it"
            exit 1
        fi
        first_start=yes
        case "$SITE_ROLE" in
            primary) init_primary ;;
            standby) init_standby ;;
            *)
                log "SITE_ROLE must be primary or standby, not '$SITE_ROLE'"
                exit 1
                ;;
        esac
    fi
    if ! start_postgres; then
        # A site whose server does not start still boots sshd, as a real host would, so drctl
        # and people can look; only a first start that fails is an error of the lab.
        [ "$first_start" = no ] || exit 1
    fi

    "$@" &
    child=$!
    local status=0
    wait "$child" || status=$?
    log "$1 exited ($status)"
    stop_postgres
    exit "$status"
}

main "$@"
