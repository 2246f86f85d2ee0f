#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v systemd-socket-activate >/dev/null || need_packages+=(systemd)
# TLS tests: test certificates (openssl req), real clients (curl, s_client).
command -v openssl >/dev/null || need_packages+=(openssl)
command -v curl >/dev/null || need_packages+=(curl)
# wrk over https through a restart and a certificate reload (tls_operations).
command -v wrk >/dev/null || need_packages+=(wrk)
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

# Python's prometheus_client, whose parser reads the metrics in
# tests/tests/metrics.rs: into a venv of the tests' own (PyPI's package).
venv=target/test-venv
if ! "$venv/bin/python3" -c 'import prometheus_client' 2>/dev/null; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        else
            echo "scripts/test.sh: please install: python3 python3-venv" >&2
            exit 1
        fi
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q prometheus-client
fi
export DROVER_TESTS_PYTHON="$PWD/$venv/bin/python3"

# The end-to-end tests ask cargo for the binaries they run, with the same
# arguments: the same features, so nothing is built twice.
export DROVER_TESTS_CARGO_ARGS="--workspace --all-targets $*"
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
