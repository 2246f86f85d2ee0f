#!/usr/bin/env bash
# Zero downtime under wrk: `wrk -t2 -c64` with keep-alive against
# `drover -w 2` while drover is sent HUP x5, TTIN, TTOU and USR2 x2, each
# waited for until it has completed (read from drover's log); then, in the
# same invocation, the same wrk run against a drover that is sent nothing.
# Prints wrk's requests, non-2xx responses and socket errors, the worker
# pids seen, and req/s with signals as a ratio of req/s without.
# Loopback only, bounded in time (two wrk runs of DURATION seconds).
#
#   scripts/zero-downtime.sh              # DURATION=15
#   DURATION=30 scripts/zero-downtime.sh
#   TLS=1 scripts/zero-downtime.sh        # over https, and a certificate
#                                         # reload (USR1) after the HUPs
#
# Target: 0 non-2xx, 0 socket errors, ratio >= 0.90.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15}
TLS=${TLS:-0}
PORT=${PORT:-18131}

. scripts/lib.sh
ensure_wrk
cargo build --release -q -p drover --bin drover

work=$(mktemp -d)
cleanup() {
    # Only what this script started: the supervisors named in its pid files.
    for file in "$work"/*.pid; do
        [ -f "$file" ] && kill -TERM "$(cat "$file")" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

scheme=http
tls_args=()
if [ "$TLS" = 1 ]; then
    scheme=https
    for name in served renewed; do
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=localhost -keyout "$work/$name.key" -out "$work/$name.pem" 2>/dev/null
    done
    tls_args=(--certfile "$work/served.pem" --keyfile "$work/served.key")
fi


# Starts drover; sets $log and $pid_file.
start() { # name
    log=$work/$1.log
    pid_file=$work/$1.pid
    target/release/drover -w 2 -b "127.0.0.1:$PORT" --pid-file "$pid_file" "${tls_args[@]}" 2>"$log" &
    wait_log "$log" 'event="ready" workers=2' 1
}

# Runs wrk in the background; its report goes to $work/$1.wrk.
load() { # name
    wrk -t2 -c64 -d"${DURATION}s" "$scheme://127.0.0.1:$PORT/" >"$work/$1.wrk" &
    wrk_pid=$!
}

# Steps are spread over the run (pacing, not synchronization: each step
# is waited for in the log before the next).
pace() { sleep "$(awk -v d="$DURATION" 'BEGIN {print d / 12}')"; } # sleep-ok: pacing the steps over the run

stop() { # log
    local supervisor
    supervisor=$(cat "$pid_file")
    kill -TERM "$supervisor"
    wait_log "$1" "event=\"stopped\" pid=$supervisor" 1
}

report() { # name
    local out=$work/$1.wrk
    local requests non2xx socket
    requests=$(awk '/requests in/ {print $1}' "$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
    socket=$(awk '/Socket errors/ {sub(/^ *Socket errors: /, ""); print}' "$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    echo "$1: requests=$requests req/s=$rps non-2xx=${non2xx:-0} socket_errors=${socket:-none}"
}

# 1. With signals.
start signals
load signals
pace
for i in 1 2 3 4 5; do
    kill -HUP "$(cat "$pid_file")"
    wait_log "$log" 'event="restart_complete"' "$i"
    pace
done
if [ "$TLS" = 1 ]; then
    # A renewal in place: the supervisor's line and each worker's.
    cp "$work/renewed.key" "$work/served.key"
    cp "$work/renewed.pem" "$work/served.pem"
    loaded=$(grep -c 'event="tls_loaded"' "$log")
    kill -USR1 "$(cat "$pid_file")"
    wait_log "$log" 'event="tls_loaded"' $((loaded + 3))
    pace
fi
kill -TTIN "$(cat "$pid_file")"
wait_log "$log" "TTIN: one worker more" 1
wait_log "$log" 'event="worker_ready" worker=13 ' 1
pace
kill -TTOU "$(cat "$pid_file")"
wait_log "$log" 'event="worker_left" worker=13 ' 1
pace
for i in 1 2; do
    old=$(cat "$pid_file")
    kill -USR2 "$old"
    wait_log "$log" 'event="upgrade_complete"' "$i"
    wait_log "$log" "event=\"stopped\" pid=$old" 1
    pace
done
wait "$wrk_pid"
stop "$log"
with=$(report signals)
pids=$(grep -o 'event="worker_started" worker=[0-9]* pid=[0-9]*' "$log" | awk -F'pid=' '{print $2}' | sort -u | tr '\n' ' ')

# 2. The same run, no signals.
start baseline
load baseline
wait "$wrk_pid"
stop "$log"
without=$(report baseline)

echo "$with"
echo "worker pids seen: $pids"
echo "$without"
awk -v a="$(awk '/req\/s=/ {for (i=1;i<=NF;i++) if ($i ~ /^req\/s=/) {sub(/req\/s=/,"",$i); print $i}}' <<<"$with")" \
    -v b="$(awk '/req\/s=/ {for (i=1;i<=NF;i++) if ($i ~ /^req\/s=/) {sub(/req\/s=/,"",$i); print $i}}' <<<"$without")" \
    'BEGIN {printf "req/s with signals / without: %.2f (target >= 0.90)\n", a / b}'
