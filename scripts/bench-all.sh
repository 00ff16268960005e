#!/usr/bin/env bash
# Runs every benchmark of the workspace against real servers on loopback and
# collects their ratios into one table.
#
#   scripts/bench-all.sh [OUTDIR]            # default OUTDIR: target/bench
#   QIS_BENCHES="sqlite kafka" scripts/bench-all.sh   # only some of them
#
# Benches (QIS_BENCHES picks among them; default all): sqlite, nats,
# nats-cluster, redis, kafka, synthesis, bridge. The servers the chosen
# benches need are installed if missing and started with the project's
# scripts (scripts/servers/<name>.sh) on the ports of QIS_NATS_PORT,
# QIS_NATS_CLUSTER_PORT, QIS_REDIS_PORT and QIS_KAFKA_PORT (defaults as in
# scripts/test-all.sh), data in a temp dir; they are stopped, by PID, when
# the benches are done, also on failure or Ctrl-C.
#
# Each bench prints its own figures and, as QIS_BENCH_JSON is set, appends
# one JSON object per ratio (qis_conformance::support::bench) to
# OUTDIR/ratios.jsonl:
#   {"backend", "operation", "baseline" ("raw", "raw+decode", …), "qis",
#    "raw", "ratio", "unit"}
# OUTDIR/ratios.md is the same as a Markdown table, headed by the date and
# the machine; OUTDIR/bench.log is everything the benches printed.
#
# Every ratio compares QIS with the raw client measured in the same run, so
# other work on the machine slows both; it still moves ratios by 20-45 % on
# a busy machine: compare runs, not single figures.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers/lib.sh

out=$(out_dir "${1:-target/bench}")
read -r -a benches <<<"${QIS_BENCHES:-sqlite nats nats-cluster redis kafka synthesis bridge}"

needs() {
  case "$1" in
    nats) echo nats ;;
    nats-cluster) echo nats-cluster ;;
    redis) echo redis ;;
    kafka) echo kafka ;;
    bridge) echo nats redis ;;
    sqlite | synthesis) ;;
    *)
      echo "bench-all.sh: unknown bench $1 (known: sqlite nats nats-cluster redis kafka synthesis bridge)" >&2
      exit 2
      ;;
  esac
}

servers=()
for b in "${benches[@]}"; do
  for s in $(needs "$b"); do
    [[ " ${servers[*]} " == *" $s "* ]] || servers+=("$s")
  done
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/qis-bench-servers.XXXXXX")
started=()
stop_servers() {
  local s
  for s in "${started[@]}"; do
    bash "scripts/servers/$s.sh" stop "$dir" || echo "warning: could not stop $s" >&2
  done
  started=()
}
cleanup() {
  local rc=$?
  stop_servers
  rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for s in "${servers[@]}"; do
  bash "scripts/servers/$s.sh" install
done
for s in "${servers[@]}"; do
  started+=("$s")
  bash "scripts/servers/$s.sh" start "$dir"
  # shellcheck disable=SC1090
  source "$dir/$s.env"
done

export QIS_BENCH_JSON="$out/ratios.jsonl"
: >"$QIS_BENCH_JSON"
: >"$out/bench.log"
when=$(date -u +"%Y-%m-%d %H:%M UTC")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1)
machine="$(uname -sm), ${cpu:-unknown CPU}, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?') at the start"

run() {
  echo "== $*" | tee -a "$out/bench.log"
  "$@" 2>&1 | tee -a "$out/bench.log"
}

for b in "${benches[@]}"; do
  case "$b" in
    sqlite) run cargo bench -p qis-transport-sqlite --bench sqlite ;;
    nats) run cargo bench -p qis-transport-nats --bench nats ;;
    nats-cluster) run cargo bench -p qis-transport-nats --bench cluster ;;
    redis) run cargo bench -p qis-transport-redis --bench redis ;;
    kafka) run cargo bench -p qis-transport-kafka --bench kafka ;;
    synthesis) run cargo bench -p qis-core --bench synthesis ;;
    bridge) run cargo bench -p qis --bench bridge --features nats,redis ;;
  esac
done

stop_servers

# The table: rates rounded to whole numbers, smaller figures (latencies and
# times per packet in µs) to two or four decimals, ratios to two.
{
  echo "Benchmarks, $when; $machine."
  echo
  echo "| backend | operation | baseline | qis | baseline figure | qis / baseline | unit |"
  echo "|---|---|---|---:|---:|---:|---|"
  jq -r '
    def dec($n): (. * pow(10; $n) | round | tostring) as $d
      | if $n == 0 then $d
        else ("0" * ([0, $n + 1 - ($d | length)] | max) + $d) as $p
        | $p[:-$n] + "." + $p[-$n:] end;
    def num: if . == null then "–" elif . >= 100 then dec(0) elif . >= 1 then dec(2) else dec(4) end;
    def ratio: if . == null then "–" else dec(2) end;
    "| \(.backend) | \(.operation) | \(.baseline) | \(.qis | num) | \(.raw | num) | \(.ratio | ratio) | \(.unit) |"
  ' "$QIS_BENCH_JSON"
} >"$out/ratios.md"
echo
cat "$out/ratios.md"
echo
echo "bench-all.sh: $(wc -l <"$QIS_BENCH_JSON") ratios in $out/ratios.jsonl and $out/ratios.md; output in $out/bench.log"
