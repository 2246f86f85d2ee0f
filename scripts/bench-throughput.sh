#!/usr/bin/env bash
# Throughput: wrk against `drover -w 2` serving `/`, and in the same run
# against one process with a multi-threaded runtime serving the same app
# (supervisor/examples/single_process.rs). Loopback only, bounded in time.
#
# Each server runs ROUNDS times, interleaved (this machine's run-to-run
# spread is ±10 %); the medians are compared.
#
#   scripts/bench-throughput.sh            # 3 rounds × 5 s per server, 64 connections
#   ROUNDS=5 DURATION=10 CONNS=32 scripts/bench-throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}

if ! command -v wrk >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p drover --bin drover --example single_process

# Waits (bounded) until the server on port $1 answers.
wait_up() {
    curl -s --retry 100 --retry-connrefused --retry-delay 0 --retry-max-time 10 \
        -o /dev/null "http://127.0.0.1:$1/" || { echo "server on $1 did not come up" >&2; exit 1; }
}

# Runs wrk; prints "req/s p99_ms".
measure() {
    local out rps p99
    out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$1/")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
    local errors
    errors=$(awk '/Socket errors|Non-2xx/ {print}' <<<"$out")
    [ -z "$errors" ] || echo "  $errors" >&2
    echo "$rps $p99"
}

run() { # name port command...
    local name=$1 port=$2; shift 2
    "$@" >/dev/null 2>&1 &
    local pid=$!
    wait_up "$port"
    local result
    result=$(measure "$port")
    kill -TERM "$pid"; wait "$pid" || true
    echo "$name $result"
}

results=$(mktemp)
for round in $(seq "$ROUNDS"); do
    run single 18101 target/release/examples/single_process 127.0.0.1:18101 >>"$results"
    run drover-w2-threads1 18102 target/release/drover -w 2 --threads 1 -b 127.0.0.1:18102 >>"$results"
    run drover-w2-threads2 18103 target/release/drover -w 2 --threads 2 -b 127.0.0.1:18103 >>"$results"
done

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
stat() { awk -v n="$1" -v f="$2" '$1 == n {print $f}' "$results" | median; }
base_rps=$(stat single 2)
base_p99=$(stat single 3)
printf '%-26s %12s %10s %10s %10s\n' "median of $ROUNDS × wrk -t2 -c$CONNS -d${DURATION}s" "req/s" "p99 ms" "req/s ×" "p99 ×"
for name in single drover-w2-threads1 drover-w2-threads2; do
    rps=$(stat "$name" 2)
    p99=$(stat "$name" 3)
    printf '%-26s %12.0f %10.2f %10.2f %10.2f\n' "$name" "$rps" "$p99" \
        "$(awk -v a="$rps" -v b="$base_rps" 'BEGIN{print a/b}')" \
        "$(awk -v a="$p99" -v b="$base_p99" 'BEGIN{print a/b}')"
done
echo "ratios against 'single' (one process, multi-threaded runtime, same app); p99 × below 1 is better"
rm -f "$results"
