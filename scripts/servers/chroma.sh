#!/usr/bin/env bash
# Chroma vector database server for the QIS chroma transport's tests and bench.
#
#   scripts/servers/chroma.sh install      # pip-installs chromadb into its own virtual
#                                          # environment (idempotent; ~500 MB)
#   scripts/servers/chroma.sh start DIR    # starts `chroma run` on 127.0.0.1:18000, data in
#                                          # DIR/chroma, PID in DIR/chroma.pid, env in DIR/chroma.env
#   scripts/servers/chroma.sh stop DIR     # stops exactly that PID and waits for it to exit
#
# QIS_CHROMA_PORT overrides the port (default 18000). QIS_CHROMA_VENV overrides
# where the virtual environment lives (default ~/.cache/qis/chroma-venv), so the
# server's Python packages never mix with the system's or another tool's.
set -euo pipefail

PORT="${QIS_CHROMA_PORT:-18000}"
VENV="${QIS_CHROMA_VENV:-$HOME/.cache/qis/chroma-venv}"
PKG="chromadb==1.5.9"
PYTHON="${PYTHON:-python3}"
cmd="${1:-}"

need_dir() {
    if [ -z "${1:-}" ]; then
        echo "usage: $0 $cmd DIR" >&2
        exit 2
    fi
}

heartbeat() {
    "$PYTHON" - "$PORT" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v2/heartbeat", timeout=1).read()
PY
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

case "$cmd" in
install)
    if [ -x "$VENV/bin/chroma" ] && "$VENV/bin/python" -c 'import chromadb' 2>/dev/null; then
        echo "chroma present: $("$VENV/bin/python" -c 'import chromadb; print(chromadb.__version__)') in $VENV"
    else
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet "$PKG"
        "$VENV/bin/chroma" --help >/dev/null
        echo "chroma installed in $VENV"
    fi
    ;;
start)
    need_dir "${2:-}"
    DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
    if [ ! -x "$VENV/bin/chroma" ]; then
        echo "chroma is not installed in $VENV; run: $0 install" >&2
        exit 1
    fi
    if [ -f "$DIR/chroma.pid" ] && kill -0 "$(cat "$DIR/chroma.pid")" 2>/dev/null; then
        echo "chroma already running with PID $(cat "$DIR/chroma.pid")" >&2
        exit 1
    fi
    if port_open; then
        echo "something already listens on 127.0.0.1:$PORT" >&2
        exit 1
    fi
    mkdir -p "$DIR/chroma"
    # No telemetry: the machine reaches no network but package registries.
    ANONYMIZED_TELEMETRY=False "$VENV/bin/chroma" run --path "$DIR/chroma" \
        --host 127.0.0.1 --port "$PORT" >"$DIR/chroma.log" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/chroma.pid"
    # Bounded poll: up to 60 s for the heartbeat (the first start imports a lot).
    ok=""
    for _ in $(seq 1 600); do
        if heartbeat; then
            ok=1
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "chroma exited during start; log:" >&2
            tail -n 30 "$DIR/chroma.log" >&2 || true
            rm -f "$DIR/chroma.pid"
            exit 1
        fi
        sleep 0.1
    done
    if [ -z "$ok" ]; then
        echo "chroma did not answer /api/v2/heartbeat on 127.0.0.1:$PORT within 60 s; log:" >&2
        tail -n 30 "$DIR/chroma.log" >&2 || true
        kill "$pid" 2>/dev/null || true
        rm -f "$DIR/chroma.pid"
        exit 1
    fi
    echo "export QIS_CHROMA_URL=chroma://127.0.0.1:$PORT" >"$DIR/chroma.env"
    echo "chroma started on 127.0.0.1:$PORT (PID $pid)"
    ;;
stop)
    need_dir "${2:-}"
    DIR="$2"
    if [ ! -f "$DIR/chroma.pid" ]; then
        echo "no $DIR/chroma.pid: nothing to stop"
        exit 0
    fi
    pid="$(cat "$DIR/chroma.pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "chroma PID $pid did not exit within 10 s of SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$DIR/chroma.pid"
    echo "chroma stopped"
    ;;
*)
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
