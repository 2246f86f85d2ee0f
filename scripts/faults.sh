#!/usr/bin/env bash
# Faults under wrk, and what they cost. Loopback only, bounded in time.
#
# 1. kill -9 of a random worker every 500 ms for DURATION seconds under
#    `wrk -t2 -c64` against `drover -w 2`: wrk's requests and errors, the
#    workers replaced, zombies seen (sampled at each kill).
# 2. SIGSTOP then SIGCONT of a worker under the same load (it resumes
#    before --worker-timeout: nothing is replaced).
# 3. Resources: supervisor and worker RSS idle and at the end of a
#    DURATION-second wrk run, and the supervisor's CPU ticks during it (it
#    is not on the data path: about 0).
# 4. A crash loop for DURATION seconds (every new worker fails at boot):
#    the boot attempts made, the longest delay reached, and the
#    supervisor's CPU ticks; then the recovery once workers boot again.
#
#   scripts/faults.sh              # DURATION=10
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
PORT=${PORT:-18141}

. scripts/lib.sh
ensure_wrk
cargo build --release -q -p drover --bin drover

work=$(mktemp -d)
supervisor=
wrk_pid=
cleanup() {
    # Only what this script started, by pid.
    [ -n "$wrk_pid" ] && kill -TERM "$wrk_pid" 2>/dev/null || true
    [ -n "$supervisor" ] && kill -TERM "$supervisor" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT


start() { # name extra-args...
    log=$work/$1.log
    shift
    target/release/drover -w 2 -b "127.0.0.1:$PORT" "$@" 2>"$log" &
    supervisor=$!
    wait_log "$log" 'event="ready" workers=2'
}

stop() {
    kill -TERM "$supervisor"
    wait "$supervisor" || true
    supervisor=
}

workers() { cat "/proc/$supervisor/task/$supervisor/children"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
zombies() { # children in state Z
    local n=0 pid
    for pid in $(workers); do
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && n=$((n + 1))
    done
    echo "$n"
}
wrk_summary() { # file
    local requests errors
    requests=$(awk '/requests in/ {print $1}' "$1")
    errors=$(awk '/Socket errors|Non-2xx/' "$1" | tr -s ' ' | tr '\n' ';')
    echo "requests=$requests errors=${errors:-none}"
}

# 1. Kill matrix.
start kill
wrk -t2 -c64 -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$work/kill.wrk" &
wrk_pid=$!
kills=0 zombie_max=0
end=$((SECONDS + DURATION))
while [ "$SECONDS" -lt "$end" ]; do
    # Zombies are counted before each kill, 500 ms after the last (right
    # after a kill, the victim is one until the supervisor reaps it).
    z=$(zombies)
    [ "$z" -gt "$zombie_max" ] && zombie_max=$z
    victims=($(workers))
    if [ "${#victims[@]}" -gt 0 ]; then
        victim=${victims[$((RANDOM % ${#victims[@]}))]}
        kill -KILL "$victim" 2>/dev/null && kills=$((kills + 1))
    fi
    sleep 0.5 # sleep-ok: the fault schedule, one kill every 500 ms
done
wait "$wrk_pid"
wrk_pid=
# Replacements that got ready: every "worker ready" after the first two.
replaced=$(($(grep -c 'event="worker_ready"' "$log" || true) - 2))
stop
echo "kill -9 every 500 ms for ${DURATION}s: kills=$kills replaced=$replaced zombies_seen=$zombie_max $(wrk_summary "$work/kill.wrk")"

# 2. SIGSTOP, then SIGCONT, of one worker.
start stop --worker-timeout 30
before=$(workers | tr ' ' '\n' | sort | tr '\n' ' ')
wrk -t2 -c64 -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$work/stop.wrk" &
wrk_pid=$!
victim=$(workers | awk '{print $1}')
kill -STOP "$victim"
sleep 2 # sleep-ok: the fault, stopped for 2 s
kill -CONT "$victim"
wait "$wrk_pid"
wrk_pid=
after=$(workers | tr ' ' '\n' | sort | tr '\n' ' ')
stop
echo "SIGSTOP for 2 s then SIGCONT: workers before=[$before] after=[$after] $(wrk_summary "$work/stop.wrk")"

# 3. Resources idle and under load.
start resources
idle_sup=$(rss_kib "$supervisor")
idle_workers=$(for w in $(workers); do rss_kib "$w"; done | tr '\n' ' ')
ticks_before=$(cpu_ticks "$supervisor")
wrk -t2 -c64 -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$work/res.wrk" &
wrk_pid=$!
# The RSS at the end of the load, while it still runs.
sleep "$((DURATION - 1))" # sleep-ok: measuring under load, a moment before wrk ends
load_sup=$(rss_kib "$supervisor")
load_workers=$(for w in $(workers); do rss_kib "$w"; done | tr '\n' ' ')
wait "$wrk_pid"
wrk_pid=
ticks=$(($(cpu_ticks "$supervisor") - ticks_before))
stop
echo "RSS KiB idle: supervisor=$idle_sup workers=[$idle_workers]"
echo "RSS KiB under wrk -c64: supervisor=$load_sup workers=[$load_workers]"
echo "supervisor CPU during ${DURATION}s of wrk -c64: $ticks ticks ($(getconf CLK_TCK)/s) $(wrk_summary "$work/res.wrk")"

# 4. Crash loop.
marker=$work/broken
DROVER_DEMO_FAIL_BOOT_IF=$marker start crash
: >"$marker"
ticks_before=$(cpu_ticks "$supervisor")
for w in $(workers); do kill -KILL "$w"; done
sleep "$DURATION" # sleep-ok: the crash loop runs for DURATION seconds
ticks=$(($(cpu_ticks "$supervisor") - ticks_before))
attempts=$(grep -c "worker failed\|exited before it was ready\|worker died" "$log" || true)
longest=$(grep -o 'delay=[0-9.]*m\?s' "$log" | tail -1)
ready_before=$(grep -c 'event="worker_ready"' "$log" || true)
rm "$marker"
wait_log "$log" 'event="worker_ready"' "$((ready_before + 1))" # recovery
recovered=$(curl -s "http://127.0.0.1:$PORT/" || true)
stop
echo "crash loop for ${DURATION}s: worker deaths=$attempts last backoff ${longest:-none} supervisor CPU=$ticks ticks; after the fix: $recovered"
