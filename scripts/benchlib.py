"""What the Python benchmark scripts share: a free port, a bounded wait,
a process's children. Imported by scripts/bench-*.py (their directory is
on sys.path when they run)."""
import socket
import time

WAIT = 20.0  # bound on any single wait, seconds


def free_port():
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(what, check):
    """Calls check() until it returns something truthy, bounded by WAIT."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
    raise SystemExit(f"timed out waiting for {what}")


def children(pid):
    """The pids of process `pid`'s children, lowest first."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(p) for p in f.read().split())
    except OSError:
        return []
