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

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

heartbeat() {
    "$PYTHON" - "$PORT" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v2/heartbeat", timeout=1).read()
PY
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
    need_dir "$cmd" "${2:-}"
    DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
    if [ ! -x "$VENV/bin/chroma" ]; then
        echo "chroma is not installed in $VENV; run: $0 install" >&2
        exit 1
    fi
    if running "$DIR/chroma.pid"; then
        echo "chroma already running with PID $(cat "$DIR/chroma.pid")" >&2
        exit 1
    fi
    if port_open "$PORT"; then
        echo "something already listens on 127.0.0.1:$PORT" >&2
        exit 1
    fi
    mkdir -p "$DIR/chroma"
    # No telemetry: the machine reaches no network but package registries.
    ANONYMIZED_TELEMETRY=False "$VENV/bin/chroma" run --path "$DIR/chroma" \
        --host 127.0.0.1 --port "$PORT" >"$DIR/chroma.log" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/chroma.pid"
    # Up to 60 s for the heartbeat (/api/v2/heartbeat): the first start imports a lot.
    if ! wait_until 60 "chroma on 127.0.0.1:$PORT" "$pid" "$DIR/chroma.log" heartbeat; then
        rm -f "$DIR/chroma.pid"
        exit 1
    fi
    echo "export QIS_CHROMA_URL=chroma://127.0.0.1:$PORT" >"$DIR/chroma.env"
    echo "chroma started on 127.0.0.1:$PORT (PID $pid)"
    ;;
stop)
    need_dir "$cmd" "${2:-}"
    stop_pidfile "$2/chroma.pid" chroma
    ;;
*)
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
