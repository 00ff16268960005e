#!/usr/bin/env bash
# The device agent's footprint against its limits (README, "Edge footprint"):
# builds examples/edge_device.rs with the `edge` profile as the README says,
# fails if the binary is over 5 MB, then forwards 10,000 packets from a new
# SQLite file to a NATS server it starts (loopback, temp dir, stopped by PID)
# and fails if the peak RSS is over 10 MB. Run by .ci/run, so a change that
# grows the agent past either limit does not land unnoticed.
#
#   scripts/edge-footprint.sh
#
# Needs GNU time (/usr/bin/time) for the memory figure; without it only the
# size is checked (and it says so). Port: $QIS_NATS_PORT (default 14622).
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_BYTES=5000000
MAX_RSS_KB=10000
export QIS_NATS_PORT="${QIS_NATS_PORT:-14622}"

RUSTFLAGS="-C link-arg=-Wl,-z,pack-relative-relocs" \
    cargo build --quiet --profile edge --example edge_device --features nats
bin="${CARGO_TARGET_DIR:-target}/edge/examples/edge_device"
bytes=$(stat -c %s "$bin")
echo "edge-footprint: $bin is $bytes bytes (limit $MAX_BYTES)"
if [ "$bytes" -gt "$MAX_BYTES" ]; then
    echo "edge-footprint: the device agent is over 5 MB; see the README's \"Edge footprint\" for what it took to get under" >&2
    exit 1
fi

if [ ! -x /usr/bin/time ]; then
    echo "edge-footprint: no GNU time (/usr/bin/time): peak RSS not checked"
    exit 0
fi
bash scripts/servers/nats.sh install
dir=$(mktemp -d "${TMPDIR:-/tmp}/qis-edge-footprint.XXXXXX")
cleanup() {
    bash scripts/servers/nats.sh stop "$dir" || true
    rm -rf "$dir"
}
trap cleanup EXIT
bash scripts/servers/nats.sh start "$dir"
# shellcheck disable=SC1091
source "$dir/nats.env"
/usr/bin/time -v -o "$dir/time.txt" "$bin" --hub "$QIS_NATS_URL" \
    --device-db "$dir/device.db" --generate 10000 --exit-when-forwarded
rss=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$dir/time.txt")
echo "edge-footprint: peak RSS forwarding 10,000 packets: $rss kB (limit $MAX_RSS_KB kB)"
if [ "$rss" -gt "$MAX_RSS_KB" ]; then
    echo "edge-footprint: the device agent's peak RSS is over 10 MB" >&2
    exit 1
fi
