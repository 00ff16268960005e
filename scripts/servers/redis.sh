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

need_dir() {
    if [ -z "${1:-}" ]; then
        echo "usage: $0 $cmd DIR" >&2
        exit 2
    fi
}

case "$cmd" in
install)
    if command -v redis-server >/dev/null 2>&1; then
        echo "redis-server present: $(redis-server --version)"
    else
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
    fi
    ;;
start)
    need_dir "${2:-}"
    DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
    mkdir -p "$DIR/redis"
    if [ -f "$DIR/redis.pid" ] && kill -0 "$(cat "$DIR/redis.pid")" 2>/dev/null; then
        echo "redis already running with PID $(cat "$DIR/redis.pid")" >&2
        exit 1
    fi
    rm -f "$DIR/redis/redis.pid"
    redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR/redis" \
        --appendonly yes --save '' --daemonize yes \
        --pidfile "$DIR/redis/redis.pid" --logfile "$DIR/redis/redis.log"
    # Bounded poll: up to 10 s for the PID file and a PONG.
    ok=""
    for _ in $(seq 1 100); do
        if [ -s "$DIR/redis/redis.pid" ] && redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; then
            ok=1
            break
        fi
        sleep 0.1
    done
    if [ -z "$ok" ]; then
        echo "redis-server did not answer PING on 127.0.0.1:$PORT within 10 s; log:" >&2
        tail -n 20 "$DIR/redis/redis.log" >&2 || true
        exit 1
    fi
    cp "$DIR/redis/redis.pid" "$DIR/redis.pid"
    echo "export QIS_REDIS_URL=redis://127.0.0.1:$PORT" >"$DIR/redis.env"
    echo "redis-server started on 127.0.0.1:$PORT (PID $(cat "$DIR/redis.pid"))"
    ;;
stop)
    need_dir "${2:-}"
    DIR="$2"
    if [ ! -f "$DIR/redis.pid" ]; then
        echo "no $DIR/redis.pid: nothing to stop"
        exit 0
    fi
    pid="$(cat "$DIR/redis.pid")"
    if kill -0 "$pid" 2>/dev/null; then
        # SIGTERM: redis flushes the AOF and exits.
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "redis-server PID $pid did not exit within 10 s of SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$DIR/redis.pid"
    echo "redis-server stopped"
    ;;
*)
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
