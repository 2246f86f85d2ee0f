#!/usr/bin/env bash
# Latency at fixed request rates: `drover -w 2` against one process with a
# multi-threaded runtime serving the same app
# (supervisor/examples/single_process.rs), in the same run. wrk measures
# saturation, where on a 2-core machine the load generator takes half the
# CPU; this measures what a client sees below it. The load generator is
# tests/examples/loadgen.rs (one thread, keep-alive connections, requests
# on a fixed schedule). Loopback only, bounded in time.
#
#   scripts/bench-latency.sh                       # rates 20k to 80k, 3 rounds × 3 s
#   RATES="10000 50000" ROUNDS=5 SECONDS_EACH=5 scripts/bench-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES:-"20000 40000 60000 80000"}
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-3}
CONNS=${CONNS:-64}

cargo build --release -q -p drover --bin drover --example single_process
cargo build --release -q -p drover-tests --example loadgen

# Waits (bounded) until the server on port $1 answers.
wait_up() {
    curl -s --retry 100 --retry-connrefused --retry-delay 0 --retry-max-time 10 \
        -o /dev/null "http://127.0.0.1:$1/" || { echo "server on $1 did not come up" >&2; exit 1; }
}

run() { # name port command...
    local name=$1 port=$2; shift 2
    "$@" >/dev/null 2>&1 &
    local pid=$!
    wait_up "$port"
    for rate in $RATES; do
        local out
        out=$(target/release/examples/loadgen "127.0.0.1:$port" "$rate" "$CONNS" "$SECONDS_EACH")
        echo "$name $rate $out"
        case "$out" in *" errors=0 "*) ;; *) echo "  $name at $rate: $out" >&2 ;; esac
    done
    kill -TERM "$pid"; wait "$pid" || true
}

results=$(mktemp)
for round in $(seq "$ROUNDS"); do
    run single 18111 target/release/examples/single_process 127.0.0.1:18111 >>"$results"
    run drover-w2 18112 target/release/drover -w 2 -b 127.0.0.1:18112 >>"$results"
done

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# stat NAME RATE FIELD: the median of FIELD (p50_us, p99_us, ...) over the rounds.
stat() {
    awk -v n="$1" -v r="$2" -v f="$3" '$1 == n && $2 == r {
        for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }' "$results" | median
}
printf '%s\n' "median of $ROUNDS rounds × ${SECONDS_EACH} s per rate; $CONNS keep-alive connections; latency in µs"
printf '%-8s %-10s %9s %8s %8s %8s %8s %8s %8s\n' rate server achieved p50 p90 p99 p99.9 "p50 ×" "p99 ×"
for rate in $RATES; do
    b50=$(stat single "$rate" p50_us)
    b99=$(stat single "$rate" p99_us)
    for name in single drover-w2; do
        p50=$(stat "$name" "$rate" p50_us)
        p90=$(stat "$name" "$rate" p90_us)
        p99=$(stat "$name" "$rate" p99_us)
        p999=$(stat "$name" "$rate" p999_us)
        achieved=$(stat "$name" "$rate" achieved_rps)
        printf '%-8s %-10s %9s %8s %8s %8s %8s %8.2f %8.2f\n' "$rate" "$name" "$achieved" "$p50" "$p90" "$p99" "$p999" \
            "$(awk -v a="$p50" -v b="$b50" 'BEGIN{print a/b}')" \
            "$(awk -v a="$p99" -v b="$b99" 'BEGIN{print a/b}')"
    done
done
echo "ratios against 'single' (one process, multi-threaded runtime, same app); below 1 is better"
rm -f "$results"
