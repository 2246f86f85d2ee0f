#!/usr/bin/env python3
"""Fleet timings of `drover` against gunicorn and uvicorn, in one run.

For each server, median over RUNS fresh launches (loopback only, bounded):
- launch → WORKERS distinct workers answering /pid
- kill -9 of a worker → a replacement answering
- SIGTERM with 50 idle keep-alive connections → every process gone
plus, for drover, the supervisor's RSS and its CPU ticks over 5 idle seconds.
With DROVER_BEFORE=path/to/an/older/drover, that binary runs too, as
"drover-before", interleaved with the others launch by launch, and the
ratios of drover's figures to its are printed (a change's own cost, in one
invocation).

    scripts/bench-fleet.py            # installs gunicorn/uvicorn with pip if missing
    DROVER_BEFORE=/tmp/old/release/drover scripts/bench-fleet.py
"""
import http.client
import os
import signal
import statistics
import subprocess
import sys
import time

from benchlib import WAIT, children, free_port, until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "7"))
BEFORE = os.environ.get("DROVER_BEFORE")
WORKERS = 4


def pid_answer(port):
    """One GET /pid on a fresh connection; None while nothing answers."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/pid")
        body = conn.getresponse().read()
        conn.close()
        return int(body)
    except (OSError, ValueError, http.client.HTTPException):
        return None


def servers(port):
    drover = os.path.join(ROOT, "target/release/drover")
    app_dir = os.path.join(ROOT, "scripts")
    return {
        "drover": [drover, "-w", str(WORKERS), "-b", f"127.0.0.1:{port}"],
        "drover-before": [BEFORE or drover, "-w", str(WORKERS), "-b", f"127.0.0.1:{port}"],
        "gunicorn": [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
                     "--chdir", app_dir, "bench_pyapps:wsgi"],
        "uvicorn": [sys.executable, "-m", "uvicorn", "--workers", str(WORKERS), "--port", str(port),
                    "--app-dir", app_dir, "--log-level", "warning", "bench_pyapps:asgi"],
    }


def one_run(name):
    port = free_port()
    command = servers(port)[name]
    begun = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    seen = set()

    def four_workers():
        pid = pid_answer(port)
        if pid:
            seen.add(pid)
        return len(seen) >= WORKERS

    until("all workers to answer", four_workers)
    launch = time.monotonic() - begun

    # uvicorn and gunicorn put the workers under the master; drover too.
    victim = next(iter(seen))
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()

    def replacement():
        pid = pid_answer(port)
        return pid is not None and pid not in seen

    until("a replacement worker", replacement)
    respawn = time.monotonic() - killed

    idle = []
    for _ in range(50):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/pid")
        conn.getresponse().read()
        idle.append(conn)  # kept open: an idle keep-alive connection
    stopping = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # Every process holds the stderr pipe: it closes when the last one exits.
    proc.stderr.read()
    proc.wait(timeout=WAIT)
    stop = time.monotonic() - stopping
    for conn in idle:
        conn.close()
    return launch, respawn, stop


def drover_footprint(measure_idle):
    """The supervisor's RSS once its workers answer and, with measure_idle,
    its CPU ticks over 5 idle seconds."""
    port = free_port()
    proc = subprocess.Popen(servers(port)["drover"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until("drover to answer", lambda: pid_answer(port))
    until("all workers", lambda: len(children(proc.pid)) >= WORKERS)
    with open(f"/proc/{proc.pid}/status") as f:
        rss_kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

    def ticks():
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    idle_ticks = None
    if measure_idle:
        before = ticks()
        time.sleep(5)  # the measurement window itself
        idle_ticks = ticks() - before
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=WAIT)
    return rss_kb, idle_ticks


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "drover", "--bin", "drover"],
                   cwd=ROOT, check=True)
    try:
        import gunicorn, uvicorn  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "gunicorn", "uvicorn"], check=True)
    names = ["drover", "gunicorn", "uvicorn"] + (["drover-before"] if BEFORE else [])
    runs = {name: [] for name in names}
    for _ in range(RUNS):  # interleaved: a slow moment of the machine hits every server
        for name in names:
            runs[name].append(one_run(name))
    results = {name: [statistics.median(r[i] for r in runs[name]) * 1000 for i in range(3)]
               for name in names}
    print(f"median of {RUNS} launches each; {WORKERS} workers; loopback")
    print(f"{'figure (ms)':<44} {'drover':>9} {'gunicorn':>9} {'uvicorn':>9} {'vs gunicorn':>12} {'vs uvicorn':>11}")
    labels = ["launch → 4 distinct workers answering", "kill -9 of a worker → replacement answering",
              "SIGTERM, 50 idle keep-alive → all gone"]
    for i, label in enumerate(labels):
        d, g, u = (results[n][i] for n in ("drover", "gunicorn", "uvicorn"))
        print(f"{label:<44} {d:9.1f} {g:9.1f} {u:9.1f} {g / d:11.1f}x {u / d:10.1f}x")
    print("ratios: baseline time ÷ drover time (above 1: drover is faster)")
    if BEFORE:
        print(f"drover-before: {BEFORE}")
        for i, label in enumerate(labels):
            d, b = results["drover"][i], results["drover-before"][i]
            print(f"{label:<44} {d:9.1f} ms vs {b:6.1f} ms before: {d / b:5.2f}x")
    # RSS varies by a few pages with what the page cache holds: a median.
    footprints = [drover_footprint(measure_idle=(i == 0)) for i in range(RUNS)]
    rss_kb = statistics.median(rss for rss, _ in footprints)
    idle_ticks = footprints[0][1]
    print(f"drover supervisor RSS (median of {RUNS} launches): {rss_kb / 1024:.2f} MiB "
          f"(target ≤ 4 MiB: {'met' if rss_kb <= 4096 else 'NOT MET'}); "
          f"CPU ticks over 5 idle seconds: {idle_ticks}")


if __name__ == "__main__":
    main()
