#!/usr/bin/env bash
# A three-node NATS JetStream cluster on loopback for the QIS tests and benches.
#
#   scripts/servers/nats-cluster.sh install          # nats-server on PATH (as nats.sh install)
#   scripts/servers/nats-cluster.sh start DIR        # three nodes, routes between them,
#                                                    # JetStream on each with its own store
#                                                    # DIR/nats-cluster/nN/store; returns once
#                                                    # there is a meta leader and JetStream
#                                                    # answers on every node; writes
#                                                    # `export QIS_NATS_CLUSTER_URL=...` (and the
#                                                    # per-node details below) to DIR/nats-cluster.env
#   scripts/servers/nats-cluster.sh stop DIR         # stops exactly the three PIDs it started
#   scripts/servers/nats-cluster.sh leader DIR STREAM
#                                                    # prints "NODE PID CLIENT_PORT" of the
#                                                    # current leader of STREAM (e.g. QIS_OUTCOMES)
#   scripts/servers/nats-cluster.sh start-node DIR N # starts node N (1..3) again from its config
#                                                    # file, e.g. after `kill -9 $(cat DIR/nats-cluster/n2.pid)`
#
# Per node N (1..3), under DIR/nats-cluster/: nN.conf (its config), nN.pid,
# nN.log, nN/store. Node names are qis-n1..qis-n3.
#
# Finding the leader by hand: every node's monitoring port answers
#   curl -s 'http://127.0.0.1:MON/jsz?accounts=true&streams=true'
# with, per stream, "cluster": {"leader": "qis-nN", ...}; `jsz` alone gives
# the meta leader ("meta_cluster": {"leader": ...}). From a client, the
# stream info ($JS.API.STREAM.INFO.<stream>) has the same cluster.leader.
#
# Ports (client, monitoring, routes; node N uses base+N-1):
#   QIS_NATS_CLUSTER_PORT          client base port     (default 14231: 14231-14233)
#   QIS_NATS_CLUSTER_MONITOR_PORT  monitoring base port (default client base + 10)
#   QIS_NATS_CLUSTER_ROUTE_PORT    route base port      (default client base + 20)
# Durability:
#   QIS_NATS_SYNC=always   fsync every write before acknowledging it (JetStream
#                          `sync_interval: always`); the default (unset) is the
#                          server's own: acknowledge at once, fsync about every
#                          2 minutes, which can lose acknowledged writes when
#                          the machines lose power together.
#   QIS_NATS_SYNC=<dur>    any other sync_interval, e.g. 10s.
set -euo pipefail

BASE="${QIS_NATS_CLUSTER_PORT:-14231}"
MON_BASE="${QIS_NATS_CLUSTER_MONITOR_PORT:-$((BASE + 10))}"
ROUTE_BASE="${QIS_NATS_CLUSTER_ROUTE_PORT:-$((BASE + 20))}"
SYNC="${QIS_NATS_SYNC:-}"
HOST=127.0.0.1
NODES=(1 2 3)
CLUSTER_NAME=qis-cluster

here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

client_port() { echo $((BASE + $1 - 1)); }
monitor_port() { echo $((MON_BASE + $1 - 1)); }
route_port() { echo $((ROUTE_BASE + $1 - 1)); }

# The node's settings as they were written at start (ports may come from the
# environment of that time, not of this call).
node_port() { sed -n 's/^# client_port: //p' "$1/n$2.conf"; }
node_monitor() { sed -n 's/^# monitor_port: //p' "$1/n$2.conf"; }

write_config() {
    local cdir="$1" n="$2" routes="" m
    for m in "${NODES[@]}"; do
        routes="$routes    nats-route://$HOST:$(route_port "$m")"$'\n'
    done
    {
        echo "# QIS test cluster node $n, written by scripts/servers/nats-cluster.sh"
        echo "# client_port: $(client_port "$n")"
        echo "# monitor_port: $(monitor_port "$n")"
        echo "server_name: qis-n$n"
        echo "listen: $HOST:$(client_port "$n")"
        echo "http: $HOST:$(monitor_port "$n")"
        echo "jetstream {"
        echo "  store_dir: \"$cdir/n$n/store\""
        if [ -n "$SYNC" ]; then
            echo "  sync_interval: $SYNC"
        fi
        echo "}"
        echo "cluster {"
        echo "  name: $CLUSTER_NAME"
        echo "  listen: $HOST:$(route_port "$n")"
        echo "  routes: ["
        printf '%s' "$routes"
        echo "  ]"
        echo "}"
    } >"$cdir/n$n.conf"
}

node_running() { running "$1/n$2.pid"; }

start_node() {
    local cdir="$1" n="$2" bin
    bin=$(find_bin nats-server) || { log "nats-server not found: run '$0 install' first"; exit 1; }
    if node_running "$cdir" "$n"; then
        log "node $n already running (pid $(cat "$cdir/n$n.pid"))"
        return 0
    fi
    local port
    port=$(node_port "$cdir" "$n")
    if port_open "$port" "$HOST"; then
        log "port $HOST:$port is already in use by another process; set QIS_NATS_CLUSTER_PORT"
        exit 1
    fi
    mkdir -p "$cdir/n$n/store"
    "$bin" -c "$cdir/n$n.conf" >>"$cdir/n$n.log" 2>&1 &
    echo $! >"$cdir/n$n.pid"
}

# GET a monitoring endpoint of node n; empty output if it does not answer.
monitor_get() {
    curl -s --max-time 2 "http://$HOST:$(node_monitor "$1" "$2")$3" 2>/dev/null || true
}

# Wait (bounded) until every node is up, agrees on a meta leader, and
# answers JetStream requests; fail with the logs otherwise.
wait_ready() {
    local cdir="$1" i n ok leader
    for i in $(seq 1 300); do
        ok=1
        for n in "${NODES[@]}"; do
            if ! node_running "$cdir" "$n"; then
                log "node $n exited at start; its log:"
                tail -n 30 "$cdir/n$n.log" >&2
                return 1
            fi
            leader=$(monitor_get "$cdir" "$n" /jsz | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    sys.exit(0)
if d.get("disabled"):
    sys.exit(0)
print((d.get("meta_cluster") or {}).get("leader", ""))' 2>/dev/null || true)
            if [ -z "$leader" ]; then ok=0; break; fi
            # healthz?js-enabled-only... is not enough: ask for the whole
            # JetStream health (meta leader known, assets current).
            if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$HOST:$(node_monitor "$cdir" "$n")/healthz" 2>/dev/null || true)" != 200 ]; then
                ok=0
                break
            fi
        done
        if [ "$ok" = 1 ]; then
            log "cluster $CLUSTER_NAME ready: meta leader $leader"
            return 0
        fi
        sleep 0.1
    done
    log "the cluster did not elect a meta leader with JetStream ready within 30 s; logs:"
    for n in "${NODES[@]}"; do
        echo "--- node $n" >&2
        tail -n 20 "$cdir/n$n.log" >&2
    done
    return 1
}

start() {
    local dir="${1:?usage: nats-cluster.sh start DIR}"
    mkdir -p "$dir/nats-cluster"
    dir=$(cd "$dir" && pwd)
    local cdir="$dir/nats-cluster" bin n
    bin=$(find_bin nats-server) || { log "nats-server not found: run '$0 install' first"; exit 1; }
    for n in "${NODES[@]}"; do
        if ! node_running "$cdir" "$n"; then
            write_config "$cdir" "$n"
        fi
    done
    for n in "${NODES[@]}"; do
        start_node "$cdir" "$n"
    done
    if ! wait_ready "$cdir"; then
        stop "$dir"
        exit 1
    fi
    local urls="" mons="" pids=""
    for n in "${NODES[@]}"; do
        urls="$urls${urls:+,}$HOST:$(node_port "$cdir" "$n")"
        mons="$mons${mons:+,}http://$HOST:$(node_monitor "$cdir" "$n")"
        pids="$pids${pids:+ }$(cat "$cdir/n$n.pid")"
    done
    {
        echo "export QIS_NATS_CLUSTER_URL=nats://$urls"
        # Where the configs, PID files and logs are (nN.conf, nN.pid, nN.log).
        echo "export QIS_NATS_CLUSTER_DIR=$cdir"
        # Each node's monitoring base URL, in node order (…/jsz, …/healthz).
        echo "export QIS_NATS_CLUSTER_MONITOR=$mons"
        echo "export QIS_NATS_RESTART_BIN=$bin"
    } >"$dir/nats-cluster.env"
    log "started nats-server pids $pids; clients: nats://$urls; monitoring: $mons; sync_interval: ${SYNC:-server default}"
}

stop() {
    local dir="${1:?usage: nats-cluster.sh stop DIR}"
    local cdir="$dir/nats-cluster" n pid
    for n in "${NODES[@]}"; do
        [ -f "$cdir/n$n.pid" ] || continue
        pid=$(cat "$cdir/n$n.pid")
        if kill -0 "$pid" 2>/dev/null; then
            # A node stopped with SIGSTOP would never see the TERM.
            kill -CONT "$pid" 2>/dev/null || true
            kill "$pid"
        fi
    done
    for n in "${NODES[@]}"; do
        [ -f "$cdir/n$n.pid" ] || continue
        pid=$(cat "$cdir/n$n.pid")
        wait_gone "$pid" "node $n"
        log "stopped node $n (pid $pid)"
        rm -f "$cdir/n$n.pid"
    done
}

leader() {
    local dir="${1:?usage: nats-cluster.sh leader DIR STREAM}"
    local stream="${2:?usage: nats-cluster.sh leader DIR STREAM}"
    local cdir="$dir/nats-cluster" n name
    for n in "${NODES[@]}"; do
        node_running "$cdir" "$n" || continue
        name=$(monitor_get "$cdir" "$n" '/jsz?accounts=true&streams=true' | STREAM="$stream" python3 -c '
import json, os, sys
try:
    d = json.load(sys.stdin)
except Exception:
    sys.exit(0)
for acc in d.get("account_details") or []:
    for s in acc.get("stream_detail") or []:
        if s.get("name") == os.environ["STREAM"]:
            print((s.get("cluster") or {}).get("leader", ""))
            sys.exit(0)' 2>/dev/null || true)
        if [ -n "$name" ]; then
            n=${name#qis-n}
            echo "$name $(cat "$cdir/n$n.pid" 2>/dev/null || echo '?') $(node_port "$cdir" "$n")"
            return 0
        fi
    done
    log "no running node reports a leader for stream $stream"
    return 1
}

case "${1:-}" in
    install) bash "$here/nats.sh" install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    leader) leader "${2:-}" "${3:-}" ;;
    start-node)
        dir="${2:?usage: nats-cluster.sh start-node DIR N}"
        n="${3:?usage: nats-cluster.sh start-node DIR N}"
        case "$n" in 1 | 2 | 3) ;; *) log "N is 1, 2 or 3"; exit 2 ;; esac
        # A node just killed may take a moment to be gone.
        for _ in $(seq 1 50); do node_running "$dir/nats-cluster" "$n" || break; sleep 0.1; done
        start_node "$dir/nats-cluster" "$n"
        log "started node $n (pid $(cat "$dir/nats-cluster/n$n.pid"))"
        ;;
    *)
        echo "usage: $0 install | start DIR | stop DIR | leader DIR STREAM | start-node DIR N" >&2
        exit 2
        ;;
esac
