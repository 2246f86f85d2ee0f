#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v systemd-socket-activate >/dev/null || need_packages+=(systemd)
# PostgreSQL's server binaries (tests/src/postgres.rs): Debian keeps them
# in /usr/lib/postgresql/N/bin, off PATH.
if ! command -v initdb >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    need_packages+=(postgresql)
fi
if [ ${#need_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
    else
        echo "scripts/test.sh: please install: ${need_packages[*]}" >&2
        exit 1
    fi
fi

# The end-to-end tests ask cargo for the binaries they run, with the same
# arguments: the same features, so nothing is built twice.
export DROVER_TESTS_CARGO_ARGS="--workspace --all-targets $*"
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
