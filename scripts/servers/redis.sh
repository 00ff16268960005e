#!/usr/bin/env bash
# Redis server for the QIS redis transport's tests and bench.
#
#   scripts/servers/redis.sh install      # installs redis-server (Debian package) if missing
#   scripts/servers/redis.sh start DIR    # starts it on 127.0.0.1:16379, data in DIR/redis,
#                                         # PID in DIR/redis.pid, env in DIR/redis.env
#   scripts/servers/redis.sh stop DIR     # stops exactly that PID and waits for it to exit
#
# QIS_REDIS_PORT overrides the port (default 16379).
set -euo pipefail

PORT="${QIS_REDIS_PORT:-16379}"
cmd="${1:-}"

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

pong() {
    [ -s "$DIR/redis/redis.pid" ] && redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG
}

case "$cmd" in
install)
    if command -v redis-server >/dev/null 2>&1; then
        echo "redis-server present: $(redis-server --version)"
    else
        apt_install redis-server
    fi
    ;;
start)
    need_dir "$cmd" "${2:-}"
    DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
    mkdir -p "$DIR/redis"
    if running "$DIR/redis.pid"; then
        echo "redis already running with PID $(cat "$DIR/redis.pid")" >&2
        exit 1
    fi
    rm -f "$DIR/redis/redis.pid"
    redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR/redis" \
        --appendonly yes --save '' --daemonize yes \
        --pidfile "$DIR/redis/redis.pid" --logfile "$DIR/redis/redis.log"
    # It daemonizes: no PID to watch until it writes its PID file.
    wait_until 10 "redis-server on 127.0.0.1:$PORT" "" "$DIR/redis/redis.log" pong || exit 1
    cp "$DIR/redis/redis.pid" "$DIR/redis.pid"
    echo "export QIS_REDIS_URL=redis://127.0.0.1:$PORT" >"$DIR/redis.env"
    echo "redis-server started on 127.0.0.1:$PORT (PID $(cat "$DIR/redis.pid"))"
    ;;
stop)
    need_dir "$cmd" "${2:-}"
    # SIGTERM: redis flushes the AOF and exits.
    stop_pidfile "$2/redis.pid" redis-server
    ;;
*)
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
