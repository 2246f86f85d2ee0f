#!/usr/bin/env python3
"""Memory per idle keep-alive connection: drover's worker against bare hyper,
in one run.

Each subject is started fresh, answers one warm-up request (on a connection
closed at once), and its RSS is read; then CONNS connections each make one
`GET /`, read the answer, and stay open, idle; the RSS is read again. Per
connection = (after - before) / CONNS. Subjects (loopback only, bounded):

- drover-hyper-app: drover serving bare hyper's own handler
  (`supervisor/examples/hello_hyper.rs`: the same `service_fn`, the same
  answer, no headers), the *worker's* RSS, with --max-connections above
  CONNS and keep-alive/header-read timeouts of an hour, so that nothing
  closes the idle connections during the measurement. The target is
  judged on this row: the handler is the same on both sides, so the
  difference is drover's own;
- drover: the stock `drover` binary (the demo app, an axum Router), the
  same way, for reference: its response future is larger and its answer
  carries a `content-type` header, whose map hyper keeps per connection
  for the next request; both are the application's, not drover's;
- hyper-http1: `worker/examples/bare_hyper.rs`, hyper's http1::Builder on a
  tokio listener, current-thread runtime, nothing else;
- hyper-auto: the same with hyper-util's auto::Builder (HTTP/1 and HTTP/2),
  for reference.

ROUNDS rounds, the subjects' order alternating from round to round;
medians. The ratio is a subject's bytes ÷ hyper-http1's.

    scripts/bench-conn-memory.py
    ROUNDS=7 CONNS=5000 scripts/bench-conn-memory.py
    SUBJECTS=drover-hyper-app,hyper-http1 scripts/bench-conn-memory.py
"""
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys

from benchlib import WAIT, children, free_port, read_answer, until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
CONNS = int(os.environ.get("CONNS", "5000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
SUBJECTS = os.environ.get("SUBJECTS", "drover-hyper-app,hyper-http1,drover,hyper-auto").split(",")
DROVERS = ("drover-hyper-app", "drover")
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
TARGET_RATIO = 1.10


def raise_nofile():
    """The script's own descriptors (CONNS clients), and the subjects' (they
    inherit it: CONNS connections each)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * CONNS + 256
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below {need}: lower CONNS")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def command(name, port):
    addr = f"127.0.0.1:{port}"
    if name in DROVERS:
        binary = "release/drover" if name == "drover" else "release/examples/hello_hyper"
        return [os.path.join(TARGET, binary), "-w", "1", "-b", addr,
                "--max-connections", str(CONNS + 100),
                "--keep-alive", "3600", "--header-read-timeout", "3600"]
    mode = {"hyper-http1": "http1", "hyper-auto": "auto"}[name]
    return [os.path.join(TARGET, "release/examples/bare_hyper"), addr, mode]


def get(sock):
    """Sends one GET / and reads the whole answer (a short fixed-length body)."""
    sock.sendall(REQUEST)
    head, _ = read_answer(sock, "the server closed a connection during the measurement")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected answer: {head[:40]!r}")


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def answers(port):
    try:
        with connect(port) as sock:
            get(sock)
        return True
    except OSError:
        return False


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def one_run(name):
    """Bytes of RSS per idle connection for one fresh launch of `name`."""
    port = free_port()
    proc = subprocess.Popen(command(name, port), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(f"{name} to answer", lambda: answers(port))
        pid = until("drover's worker", lambda: children(proc.pid))[0] if name in DROVERS else proc.pid
        before = rss_kib(pid)
        conns = []
        for _ in range(CONNS):
            sock = connect(port)
            get(sock)
            conns.append(sock)
        after = rss_kib(pid)
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited during the measurement")
        for sock in conns:
            sock.close()
        return (after - before) * 1024 / CONNS, before
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    raise_nofile()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "drover", "--bin", "drover",
                    "--example", "hello_hyper"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "drover-worker",
                    "--example", "bare_hyper"], cwd=ROOT, check=True)
    per_conn = {name: [] for name in SUBJECTS}
    base_rss = {name: [] for name in SUBJECTS}
    for round_ in range(ROUNDS):
        order = SUBJECTS if round_ % 2 == 0 else SUBJECTS[::-1]
        for name in order:
            bytes_, before = one_run(name)
            per_conn[name].append(bytes_)
            base_rss[name].append(before)
        print(f"round {round_ + 1}: " + ", ".join(
            f"{n} {per_conn[n][-1]:.0f} B" for n in SUBJECTS), file=sys.stderr)
    print(f"median of {ROUNDS} fresh launches each; {CONNS} idle keep-alive connections "
          f"(one GET / each); loopback")
    print(f"{'subject':<17} {'B/conn':>9} {'KiB/conn':>9} {'range KiB':>15} {'RSS before':>11} "
          f"{'× hyper-http1':>14}")
    base = statistics.median(per_conn["hyper-http1"]) if "hyper-http1" in SUBJECTS else None
    for name in SUBJECTS:
        med = statistics.median(per_conn[name])
        lo, hi = min(per_conn[name]) / 1024, max(per_conn[name]) / 1024
        ratio = f"{med / base:13.2f}x" if base else ""
        print(f"{name:<17} {med:9.0f} {med / 1024:9.2f} {lo:7.2f}–{hi:<7.2f} "
              f"{statistics.median(base_rss[name]) / 1024:8.1f} MiB {ratio}")
    if base and "drover-hyper-app" in SUBJECTS:
        drover = statistics.median(per_conn["drover-hyper-app"])
        over = drover - base
        met = drover <= base * TARGET_RATIO
        print(f"drover-hyper-app - hyper-http1 (drover's own): {over:.0f} B per idle connection; "
              f"target ≤ {TARGET_RATIO:.2f}x hyper-http1 (≈ 1 KiB above it): "
              f"{'met' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
