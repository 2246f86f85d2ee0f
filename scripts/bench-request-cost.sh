#!/usr/bin/env bash
# A change's cost per request, against an older drover binary, in one run:
# - pinned throughput: `drover -w 1 --threads 1` on CPU 0, wrk on CPU 1
#   (one thread, 16 keep-alive connections), the two binaries alternating
#   ROUNDS times, medians compared;
# - instructions per request (valgrind --tool=callgrind, which counts
#   instructions, not time): the worker process serving N keep-alive
#   requests, less the same worker serving one, for each binary.
# Loopback only, bounded in time.
#
#   scripts/bench-request-cost.sh /path/to/older/drover
#   ROUNDS=5 DURATION=5 N=2000 scripts/bench-request-cost.sh /tmp/drover-before
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:?usage: scripts/bench-request-cost.sh OLDER_DROVER_BINARY}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
N=${N:-2000}
NOW=target/release/drover
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
cargo build --release -q -p drover --bin drover

wait_up() {
    curl -s --retry 300 --retry-connrefused --retry-delay 0 --retry-max-time 60 \
        -o /dev/null "http://127.0.0.1:$1/" || { echo "server on $1 did not come up" >&2; exit 1; }
}

rps() { # binary port
    taskset -c 0 "$1" -w 1 --threads 1 -b "127.0.0.1:$2" >/dev/null 2>&1 &
    local pid=$!
    wait_up "$2"
    taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" "http://127.0.0.1:$2/" | awk '/^Requests\/sec:/ {print $2}'
    kill -TERM "$pid"; wait "$pid" || true
}

# The worker's instruction count for `count` requests on one keep-alive
# connection (its callgrind file is the second one written: the
# supervisor's comes first).
instructions() { # binary port count
    local dir; dir=$(mktemp -d)
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$dir/cg.%p" \
        "$1" -w 1 -b "127.0.0.1:$2" >/dev/null 2>&1 &
    local pid=$!
    wait_up "$2"
    python3 - "$2" "$3" <<'PY'
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=60)
for _ in range(count):
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"hello\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("connection closed")
        data += chunk
PY
    kill -TERM "$pid"; wait "$pid" || true
    local worker; worker=$(ls "$dir" | sort -t. -k2 -n | tail -1)
    awk '/^summary:/ {print $2}' "$dir/$worker"
    rm -rf "$dir"
}

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
now_rps=(); before_rps=()
for round in $(seq "$ROUNDS"); do
    now_rps+=("$(rps "$NOW" 18111)")
    before_rps+=("$(rps "$BEFORE" 18112)")
done
now_med=$(printf '%s\n' "${now_rps[@]}" | median)
before_med=$(printf '%s\n' "${before_rps[@]}" | median)
printf 'pinned req/s (server CPU 0, wrk CPU 1), median of %s × %ss: now %.0f, before %.0f: %.3fx\n' \
    "$ROUNDS" "$DURATION" "$now_med" "$before_med" "$(awk -v a="$now_med" -v b="$before_med" 'BEGIN{print a/b}')"

per_request() { # binary
    local one many
    one=$(instructions "$1" 18113 1)
    many=$(instructions "$1" 18114 $((N + 1)))
    awk -v a="$many" -v b="$one" -v n="$N" 'BEGIN{printf "%.0f", (a - b) / n}'
}
now_ir=$(per_request "$NOW")
before_ir=$(per_request "$BEFORE")
printf 'worker instructions per request (callgrind, %s keep-alive requests): now %s, before %s: %+d (%.3fx)\n' \
    "$N" "$now_ir" "$before_ir" $((now_ir - before_ir)) "$(awk -v a="$now_ir" -v b="$before_ir" 'BEGIN{print a/b}')"
