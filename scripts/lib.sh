# Shared by the load and fault scripts: source it, do not run it.

# Installs wrk when it is missing (Debian's package).
ensure_wrk() {
    if ! command -v wrk >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    fi
}

# Waits (at most 30 s) until `log` holds `count` (default 1) lines matching
# `pattern`: follows the file, so it returns as the line is written.
wait_log() { # log pattern [count]
    local follow found=0
    exec {follow}< <(exec timeout 30 tail -n +1 -F "$1" 2>/dev/null)
    local follower=$!
    grep -m "${3:-1}" -q -- "$2" <&"$follow" && found=1
    kill "$follower" 2>/dev/null || true
    exec {follow}<&-
    if [ "$found" = 0 ]; then
        echo "$(basename "$0"): no '$2' (x${3:-1}) in $1 within 30 s" >&2
        tail -20 "$1" >&2
        exit 1
    fi
}
