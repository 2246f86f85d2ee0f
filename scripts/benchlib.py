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


def content_length(head):
    """The Content-Length of a response head (bytes), 0 when absent."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def read_answer(sock, closed="closed before the answer"):
    """One whole answer with a Content-Length from a blocking socket:
    (head, body). A socket closed before it raises OSError(`closed`)."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError(closed)
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and len(body) >= content_length(head):
            return head, body
