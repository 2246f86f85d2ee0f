#!/usr/bin/env python3
"""The operator's endpoints, measured (issue 13's targets):

1. `status` round trip on the control socket with 8 workers (every worker
   asked for its counters, answered once all replied): median <= 5 ms, and
   no worker's figures older than the request. Also the whole
   `drover ctl status` command (a process start included).
2. A `/metrics` scrape with 8 workers (fresh connection each): median <= 5 ms.
3. Throughput with --metrics and --control-socket on (scraped and asked for
   status once a second meanwhile) against both off, same run, drover on
   core 0 and wrk on core 1, rounds interleaved: ratio >= 0.98.
4. An idle supervisor with both on: CPU ticks and context switches over 5 s
   (target 0 ticks).

Loopback only; every run is bounded in time and count.

    scripts/bench-operator.py            # 3 throughput rounds x 5 s
    ROUNDS=5 DURATION=10 scripts/bench-operator.py
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, until  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DROVER = os.path.join(ROOT, "target/release/drover")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "5"))
SAMPLES = 200


def start(args, pin=None):
    command = [DROVER, *args]
    if pin is not None:
        command = ["taskset", "-c", str(pin), *command]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Control:
    """One connection to the control socket."""

    def __init__(self, path):
        self.sock = until("the control socket", lambda: connect_unix(path))
        self.reader = self.sock.makefile("rb")
        self.next_id = 0

    def ask(self, command):
        self.next_id += 1
        line = json.dumps({"id": self.next_id, "command": command}) + "\n"
        self.sock.sendall(line.encode())
        return json.loads(self.reader.readline())


def serving(path, workers):
    """A connection to the control socket at `path`, once `workers` serve."""
    control = Control(path)
    until(f"{workers} workers serving", lambda: sum(
        w["state"] == "ready" for w in control.ask("status")["data"]["workers"]) == workers)
    return control


def connect_unix(path):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return s
    except OSError:
        return None


def scrape(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nhost: bench\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    assert response.startswith(b"HTTP/1.1 200"), response[:100]
    return response


def ms(seconds):
    return seconds * 1000.0


def round_trips(tmp):
    path = os.path.join(tmp, "ctl.sock")
    port, metrics = free_port(), free_port()
    drover = start(["-w", "8", "-b", f"127.0.0.1:{port}", "--control-socket", path,
                    "--metrics", f"127.0.0.1:{metrics}"])
    try:
        control = serving(path, 8)
        times, stale = [], 0
        for _ in range(SAMPLES):
            began = time.monotonic()
            reply = control.ask("status")
            took = time.monotonic() - began
            times.append(took)
            for worker in reply["data"]["workers"]:
                if worker["late"] or worker["counters_age_ms"] is None \
                        or worker["counters_age_ms"] > ms(took):
                    stale += 1
        ctl_times = []
        for _ in range(50):
            began = time.monotonic()
            subprocess.run([DROVER, "ctl", "--control-socket", path, "status"],
                           check=True, stdout=subprocess.DEVNULL)
            ctl_times.append(time.monotonic() - began)
        scrapes = []
        for _ in range(SAMPLES):
            began = time.monotonic()
            scrape(metrics)
            scrapes.append(time.monotonic() - began)
    finally:
        stop(drover)
    status_ms = ms(statistics.median(times))
    print(f"status round trip, 8 workers: median {status_ms:.2f} ms, "
          f"p90 {ms(statistics.quantiles(times, n=10)[-1]):.2f} ms ({SAMPLES} requests); "
          f"worker figures older than their request: {stale}   target <= 5 ms, 0 stale")
    print(f"`drover ctl status` (a process start included): median "
          f"{ms(statistics.median(ctl_times)):.2f} ms (50 runs)")
    scrape_ms = ms(statistics.median(scrapes))
    print(f"/metrics scrape, 8 workers: median {scrape_ms:.2f} ms, "
          f"p90 {ms(statistics.quantiles(scrapes, n=10)[-1]):.2f} ms ({SAMPLES} scrapes)   "
          f"target <= 5 ms")


def wrk(port):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{DURATION}s",
                          f"http://127.0.0.1:{port}/"], check=True, capture_output=True,
                         text=True).stdout
    errors = [line for line in out.splitlines() if "Socket errors" in line or "Non-2xx" in line]
    if errors:
        print("  " + "; ".join(errors))
    return float(next(line.split()[1] for line in out.splitlines()
                      if line.startswith("Requests/sec:")))


def throughput(tmp):
    results = {"off": [], "on": []}
    for _ in range(ROUNDS):
        for mode in ("off", "on"):
            port = free_port()
            args = ["-w", "1", "-b", f"127.0.0.1:{port}"]
            watcher = None
            stop_watching = threading.Event()
            if mode == "on":
                path, metrics = os.path.join(tmp, f"t{port}.sock"), free_port()
                args += ["--control-socket", path, "--metrics", f"127.0.0.1:{metrics}"]
            drover = start(args, pin=0)
            try:
                until("the server", lambda: connects(port))
                if mode == "on":
                    control = Control(path)

                    def watch():
                        # sleep-ok: pacing an operator's once-a-second look
                        while not stop_watching.wait(1.0):
                            scrape(metrics)
                            control.ask("status")
                    watcher = threading.Thread(target=watch)
                    watcher.start()
                results[mode].append(wrk(port))
            finally:
                stop_watching.set()
                if watcher:
                    watcher.join()
                stop(drover)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print(f"throughput, drover -w 1 on core 0, wrk -c32 on core 1, {ROUNDS} x {DURATION} s: "
          f"off {off:.0f} req/s, on (scraped and asked once a second) {on:.0f} req/s, "
          f"ratio {on / off:.3f}   target >= 0.98")
    print(f"  rounds off: {[round(r) for r in results['off']]}, on: {[round(r) for r in results['on']]}")


def connects(port):
    try:
        socket.create_connection(("127.0.0.1", port)).close()
        return True
    except OSError:
        return False


def usage(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    switches = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
    return ticks, switches


def idle(tmp):
    path, port, metrics = os.path.join(tmp, "idle.sock"), free_port(), free_port()
    drover = start(["-w", "2", "-b", f"127.0.0.1:{port}", "--control-socket", path,
                    "--metrics", f"127.0.0.1:{metrics}"])
    try:
        control = serving(path, 2)
        control.sock.close()  # an idle supervisor has no client either
        time.sleep(1)  # sleep-ok: let the start-up settle before the window
        before = usage(drover.pid)
        time.sleep(5)  # sleep-ok: the measurement window itself
        after = usage(drover.pid)
    finally:
        stop(drover)
    print(f"idle supervisor (-w 2, both endpoints on) over 5 s: {after[0] - before[0]} CPU ticks, "
          f"{after[1] - before[1]} context switches   target 0 ticks")


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "drover", "--bin", "drover"],
                   cwd=ROOT, check=True)
    if shutil.which("wrk") is None:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                       "apt-get install -y -qq wrk >/dev/null", shell=True, check=True)
    with tempfile.TemporaryDirectory(prefix="drover-bench-operator-") as tmp:
        round_trips(tmp)
        idle(tmp)
        throughput(tmp)


if __name__ == "__main__":
    main()
