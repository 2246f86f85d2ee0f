#!/usr/bin/env python3
"""drover's TLS termination against nginx's, in one run.

Both servers serve `GET /` → `hello` over HTTPS with the same ECDSA P-256
certificate (made with openssl in a temporary directory, removed at exit),
TLS 1.2 and 1.3, loopback only, every run bounded in time:

1. new TLS connections per second: wrk over https with `Connection: close`,
   so every request is a new TCP connection and a new TLS handshake. wrk
   (OpenSSL) offers each new connection the session of that slot's previous
   one, so after the first of each slot these are TLS 1.3 resumptions
   (PSK with X25519, no certificate signature): nginx's
   `$ssl_session_reused` counted 99 % resumed. The check printed first
   says whether each server resumes a Python client's session;
2. keep-alive requests per second over TLS: plain wrk over https;
3. memory per idle TLS connection: CONNS connections each make a handshake
   and one `GET /` on a fresh launch of each server, read the answer and
   stay open, idle; per connection = (sum of the VmRSS of the server's
   worker processes after − before) ÷ CONNS (nginx: the master's children;
   drover: the supervisor's). 1 worker each, idle limits of an hour on
   both, and the server side of the CONNS connections is counted as
   ESTABLISHED before the figure is taken.

The default run is the project's rule for ratios: 1 worker each
(`worker_processes 1` / `-w 1`), the server pinned on core 0 and wrk on
core 1 (`taskset`), wrk -t1 -c50. WORKERS=N (N > 1) adds an unpinned run
of 1. and 2. with N workers each (wrk -t2 -c100 by default). The rounds
alternate the servers' order; medians are printed, each round on stderr.
The servers' and wrk's CPU use is printed per run: a wrk at ~100 % of its
core bounds the figure from the client side.

Needs nginx (Debian's, /usr/sbin/nginx), wrk, openssl and taskset on PATH
(one line and exit 1 otherwise), and a built drover: it does not build it
(`cargo build --release -p drover` first; DROVER=path for another binary).

    scripts/bench-tls.py                       # 3 rounds x 10 s, 5000 idle connections
    DURATION=3s ROUNDS=1 scripts/bench-tls.py  # a quick look
    WORKERS=2 scripts/bench-tls.py             # also unpinned, 2 workers each
    CONNS=10000 THREADS=1 CONNECTIONS=100 scripts/bench-tls.py
"""
import asyncio
import functools
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import WAIT, children, content_length, free_port, read_answer, until  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
DROVER = os.environ.get("DROVER", os.path.join(TARGET, "release/drover"))
DURATION = os.environ.get("DURATION", "10s")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
WORKERS = int(os.environ.get("WORKERS", "1"))
CONNS = int(os.environ.get("CONNS", "5000"))
BATCH = 200  # handshakes in flight at once while opening the idle connections
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
SERVERS = ("nginx", "drover")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def seconds(duration):
    """wrk's duration syntax (10, 10s, 2m) in seconds."""
    match = re.fullmatch(r"(\d+)([sm]?)", duration)
    if not match:
        raise SystemExit(f"DURATION={duration!r}: expected seconds, e.g. 10s")
    return int(match[1]) * (60 if match[2] == "m" else 1)


def require_tools():
    """nginx's path; one line and exit 1 when a tool or drover is missing."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    missing = [name for name in ("wrk", "openssl", "taskset") if shutil.which(name) is None]
    if nginx is None:
        missing.insert(0, "nginx")
    if missing:
        raise SystemExit(f"bench-tls.py needs {', '.join(missing)} on PATH "
                         "(Debian: apt-get install nginx wrk openssl util-linux)")
    if not os.access(DROVER, os.X_OK):
        raise SystemExit(f"{DROVER} is missing: cargo build --release -p drover first")
    return nginx


def raise_nofile():
    """The script's own descriptors (CONNS clients), and the servers' (they
    inherit it); returns the soft limit the servers get."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = CONNS + 1024
    if hard != resource.RLIM_INFINITY and hard < need:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below {need}: lower CONNS")
    new = hard if hard != resource.RLIM_INFINITY else max(soft, 2 * need)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def make_certificate(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-keyout", key,
                    "-out", cert, "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def nginx_config(tmp, port, plain_port, workers, cert, key, nofile):
    # `user` only makes sense for a root master (else nginx warns and runs
    # as the current user anyway); the files in tmp are root's then.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {tmp}/nginx.pid;
lock_file {tmp}/nginx.lock;
error_log {tmp}/nginx-error.log warn;
events {{
    worker_connections {min(nofile, max(10000, CONNS + 1000))};
}}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 3600s;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        listen 127.0.0.1:{plain_port};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            return 200 "hello\\n";
        }}
    }}
}}
"""


class Server:
    """nginx or drover, started with `workers` workers, pinned on core 0 if
    `pinned`; stopped by its own pid only."""

    def __init__(self, name, ctx, workers, pinned, idle=False):
        self.name, self.ctx, self.workers = name, ctx, workers
        self.port = free_port()
        # Plain HTTP beside TLS, for the memory figure's decomposition.
        self.plain_port = free_port()
        tmp = ctx["tmp"]
        self.log_path = os.path.join(tmp, f"{name}-{self.port}.log")
        if name == "nginx":
            conf = os.path.join(tmp, f"nginx-{self.port}.conf")
            with open(conf, "w") as f:
                f.write(nginx_config(tmp, self.port, self.plain_port, workers, ctx["cert"],
                                     ctx["key"], ctx["nofile"]))
            command = [ctx["nginx"], "-p", tmp, "-e", os.path.join(tmp, "nginx-error.log"),
                       "-c", conf]
        else:
            command = [DROVER, "-w", str(workers), "--bind", f"127.0.0.1:{self.port}",
                       "--insecure-bind", f"127.0.0.1:{self.plain_port}",
                       "--certfile", ctx["cert"], "--keyfile", ctx["key"], "--log-format", "json"]
            if idle:
                command += ["--max-connections", str(CONNS + 100),
                            "--keep-alive", "3600", "--header-read-timeout", "3600"]
        if pinned:
            command = ["taskset", "-c", "0", *command]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            until(f"{name} to serve with {workers} workers", self.ready)
        except BaseException:
            self.stop()
            raise

    def log_tail(self):
        paths = [self.log_path]
        if self.name == "nginx":
            paths.append(os.path.join(self.ctx["tmp"], "nginx-error.log"))
        lines = []
        for path in paths:
            try:
                with open(path) as f:
                    lines += f.read().splitlines()[-5:]
            except OSError:
                pass
        return "\n".join(lines)

    def ready(self):
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
        if self.name == "drover":
            with open(self.log_path) as f:
                if '"event":"ready"' not in f.read():
                    return False
        elif len(children(self.proc.pid)) < self.workers:
            return False
        return get_once(self.port, self.ctx["cert"])

    def worker_pids(self):
        pids = children(self.proc.pid)
        if len(pids) != self.workers:
            raise SystemExit(f"{self.name}: {len(pids)} worker processes, expected {self.workers}")
        return pids

    def check_alive(self):
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited during the measurement:\n{self.log_tail()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@functools.cache
def client_context(cert):
    """One client context per certificate (a session resumes only on the
    context it was made on); the server is verified against `cert`."""
    ctx = ssl.create_default_context(cafile=cert)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def get_once(port, cert, session=None):
    """One GET / over TLS on a fresh connection; the TLS socket's facts, or
    None while nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
            with client_context(cert).wrap_socket(raw, server_hostname="localhost",
                                                  session=session) as sock:
                sock.sendall(REQUEST)
                head, body = read_answer(sock)
                if not head.startswith(b"HTTP/1.1 200") or body != b"hello\n":
                    raise SystemExit(f"unexpected answer on port {port}: {head[:40]!r} {body!r}")
                return {"version": sock.version(), "cipher": sock.cipher()[0],
                        "session": sock.session, "reused": sock.session_reused}
    except (OSError, ssl.SSLError):
        return None


def handshake_facts(server):
    """What a Python (OpenSSL) client negotiates, and whether the server
    resumes the session of the previous connection."""
    first = get_once(server.port, server.ctx["cert"])
    again = get_once(server.port, server.ctx["cert"], session=first["session"])
    return (f"{server.name}: {first['version']} {first['cipher']}, session resumed on reconnect: "
            f"{'yes' if again and again['reused'] else 'NO'}")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total


def wrk(server, close, threads, connections, pinned):
    """One bounded wrk run; req/s, with its errors and the CPU both sides used."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{DURATION}", "--timeout", "5s"]
    if close:
        command += ["-H", "Connection: close"]
    command.append(f"https://127.0.0.1:{server.port}/")
    if pinned:
        command = ["taskset", "-c", "1", *command]
    pids = server.worker_pids()
    server_before = cpu_ticks(pids)
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=seconds(DURATION) + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SystemExit(f"wrk against {server.name} did not finish in time")
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = (cpu_ticks(pids) - server_before) / CLK_TCK
    server.check_alive()
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed against {server.name}: {err.strip() or out.strip()}")
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s*(\d+) requests in", out, re.M)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rate or not total or int(total[1]) == 0:
        raise SystemExit(f"wrk against {server.name} answered nothing:\n{out}{err}")
    errors = [int(n) for n in socket_errors.groups()] if socket_errors else [0, 0, 0, 0]
    wrk_cpu = (wrk_after.ru_utime + wrk_after.ru_stime
               - wrk_before.ru_utime - wrk_before.ru_stime)
    span = seconds(DURATION)
    requests = int(total[1])
    return {"rate": float(rate[1]), "requests": requests, "errors": errors,
            "non2xx": int(non_2xx[1]) if non_2xx else 0,
            "server_cpu": 100 * server_cpu / span, "wrk_cpu": 100 * wrk_cpu / span,
            "server_us": 1e6 * server_cpu / requests, "wrk_us": 1e6 * wrk_cpu / requests}


def describe(run):
    c, r, w, t = run["errors"]
    return (f"{run['rate']:.0f} req/s ({run['requests']} requests), errors {sum(run['errors'])} "
            f"(connect {c}, read {r}, write {w}, timeout {t}), non-2xx {run['non2xx']}; "
            f"CPU server {run['server_cpu']:.0f} % ({run['server_us']:.1f} µs/req), "
            f"wrk {run['wrk_cpu']:.0f} % ({run['wrk_us']:.1f} µs/req)")


def throughput(ctx, workers, pinned, threads, connections):
    """ROUNDS rounds of both wrk runs against both servers; the runs."""
    servers = {}
    try:
        for name in SERVERS:
            servers[name] = Server(name, ctx, workers, pinned)
        for name in SERVERS:
            print(f"  {handshake_facts(servers[name])}", file=sys.stderr)
        runs = {(name, kind): [] for name in SERVERS for kind in ("new", "keep")}
        for round_ in range(ROUNDS):
            order = SERVERS if round_ % 2 == 0 else SERVERS[::-1]
            for name in order:
                for kind in ("new", "keep"):
                    run = wrk(servers[name], kind == "new", threads, connections, pinned)
                    runs[(name, kind)].append(run)
                    label = "new connections" if kind == "new" else "keep-alive"
                    print(f"  round {round_ + 1} {name:<6} {label:<15}: {describe(run)}",
                          file=sys.stderr)
        return runs
    finally:
        for server in servers.values():
            server.stop()


class Failed(Exception):
    """A measurement that cannot be taken (raised inside the event loop)."""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def established(port, peers):
    """How many of the connections from 127.0.0.1's ports `peers` to
    127.0.0.1:port are ESTABLISHED on the server's side. /proc/net/tcp is
    read while other sockets come and go, so a read can list an entry twice
    or miss one: entries are counted once, and the best of 5 reads wins."""
    local = f"0100007F:{port:04X}"
    remotes = {f"0100007F:{peer:04X}" for peer in peers}
    best = 0
    for _ in range(5):
        seen = set()
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == local and fields[2] in remotes and fields[3] == "01":
                    seen.add(fields[2])
        best = max(best, len(seen))
        if best == len(remotes):
            break
    return best


async def open_idle(server, ctx, over_tls):
    """CONNS connections, each (a handshake and) one GET / read whole, left
    open; the bytes of worker RSS per connection."""
    pids = server.worker_pids()
    before = sum(rss_kib(pid) for pid in pids)
    port = server.port if over_tls else server.plain_port
    tls = {"ssl": client_context(ctx["cert"]), "server_hostname": "localhost"} if over_tls else {}
    conns = []

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **tls)
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(content_length(head))
        if not head.startswith(b"HTTP/1.1 200") or body != b"hello\n":
            raise Failed(f"{server.name}: unexpected answer {head[:40]!r}")
        return reader, writer

    try:
        for start in range(0, CONNS, BATCH):
            batch = [one() for _ in range(min(BATCH, CONNS - start))]
            conns += await asyncio.wait_for(asyncio.gather(*batch), WAIT)
        open_now = established(port,
                               [writer.get_extra_info("sockname")[1] for _, writer in conns])
        after = sum(rss_kib(pid) for pid in pids)
        if server.proc.poll() is not None:
            raise Failed(f"{server.name} exited during the measurement:\n{server.log_tail()}")
        if open_now != CONNS or any(reader.at_eof() for reader, _ in conns):
            raise Failed(f"{server.name}: {open_now} of {CONNS} connections still open at the "
                         "measurement")
        return (after - before) * 1024 / CONNS, before
    finally:
        for _, writer in conns:
            writer.transport.abort()


def memory(ctx, pinned):
    """Per idle connection over TLS and, on a fresh launch, over plain HTTP
    (what the HTTP layer alone costs): {(name, over_tls): [bytes per
    round]}, and each server's RSS before the TLS connections."""
    per_conn = {(name, over_tls): [] for name in SERVERS for over_tls in (True, False)}
    base = {name: [] for name in SERVERS}
    for round_ in range(ROUNDS):
        order = SERVERS if round_ % 2 == 0 else SERVERS[::-1]
        for name in order:
            for over_tls in (True, False):
                server = Server(name, ctx, 1, pinned, idle=True)
                try:
                    bytes_, before = asyncio.run(open_idle(server, ctx, over_tls))
                except (Failed, OSError, ssl.SSLError, asyncio.TimeoutError) as error:
                    raise SystemExit(f"{name}, opening {CONNS} idle connections: {error!r}")
                finally:
                    server.stop()
                per_conn[(name, over_tls)].append(bytes_)
                if over_tls:
                    base[name].append(before)
        print(f"  round {round_ + 1} memory: " + ", ".join(
            f"{n} {per_conn[(n, True)][-1]:.0f} B/conn over TLS, "
            f"{per_conn[(n, False)][-1]:.0f} plain (RSS before {base[n][-1] / 1024:.1f} MiB)"
            for n in SERVERS), file=sys.stderr)
    return per_conn, base


def verdict(ratio, target):
    return f"target ≥ {target:.1f}x: {'met' if ratio >= target else 'NOT MET'}"


def print_rates(runs, title, pinned):
    print(title)
    print(f"  {'figure (median)':<42} {'nginx':>9} {'drover':>9} {'drover/nginx':>13}")
    for kind, label in (("new", "new TLS connections/s (Connection: close)"),
                        ("keep", "keep-alive requests/s over TLS")):
        nginx = statistics.median(r["rate"] for r in runs[("nginx", kind)])
        drover = statistics.median(r["rate"] for r in runs[("drover", kind)])
        ratio = drover / nginx
        print(f"  {label:<42} {nginx:9.0f} {drover:9.0f} {ratio:12.2f}x   {verdict(ratio, 1.0)}")
        for name in SERVERS:
            rounds = runs[(name, kind)]
            errors = sum(sum(r["errors"]) for r in rounds)
            non2xx = sum(r["non2xx"] for r in rounds)
            med = {k: statistics.median(r[k] for r in rounds)
                   for k in ("server_cpu", "server_us", "wrk_cpu", "wrk_us")}
            print(f"    {name:<6} rounds {[round(r['rate']) for r in rounds]}, errors {errors}, "
                  f"non-2xx {non2xx}; CPU per request: server {med['server_us']:.1f} µs "
                  f"({med['server_cpu']:.0f} % busy), wrk {med['wrk_us']:.1f} µs "
                  f"({med['wrk_cpu']:.0f} % busy)")
        # What one core of each server can take: requests per second of
        # its CPU time. The figure that decides when wrk saturates its own
        # core before the server does (the rates above then measure wrk).
        capacity = {n: 1e6 / statistics.median(r["server_us"] for r in runs[(n, kind)])
                    for n in SERVERS}
        ratio = capacity["drover"] / capacity["nginx"]
        print(f"  {'  per core of server CPU (1 / CPU per req)':<42} {capacity['nginx']:9.0f} "
              f"{capacity['drover']:9.0f} {ratio:12.2f}x   {verdict(ratio, 1.0)}")
        if pinned and max(statistics.median(r["wrk_cpu"] for r in runs[(n, kind)])
                          for n in SERVERS) >= 90:
            print("    (wrk used ≥ 90 % of its core: the rate is bounded by the client as well; "
                  "the server's CPU per request is its own cost)")
    bad = sum(sum(r["errors"]) + r["non2xx"] for rounds in runs.values() for r in rounds)
    if bad:
        print(f"  WARNING: {bad} wrk errors or non-2xx answers: the rates above are suspect")


def main():
    nginx = require_tools()
    nofile = raise_nofile()
    pinned_threads = int(os.environ.get("THREADS", "1"))
    pinned_connections = int(os.environ.get("CONNECTIONS", "50"))
    nginx_version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    with tempfile.TemporaryDirectory(prefix="drover-bench-tls-") as tmp:
        cert, key = make_certificate(tmp)
        ctx = {"tmp": tmp, "cert": cert, "key": key, "nginx": nginx, "nofile": nofile}
        print(f"pinned, 1 worker each on core 0, wrk -t{pinned_threads} -c{pinned_connections} "
              f"on core 1:", file=sys.stderr)
        pinned = throughput(ctx, 1, True, pinned_threads, pinned_connections)
        unpinned = None
        if WORKERS > 1:
            threads = int(os.environ.get("THREADS", "2"))
            connections = int(os.environ.get("CONNECTIONS", "100"))
            print(f"unpinned, {WORKERS} workers each, wrk -t{threads} -c{connections}:",
                  file=sys.stderr)
            unpinned = (throughput(ctx, WORKERS, False, threads, connections), threads, connections)
        print(f"memory, {CONNS} idle TLS connections, 1 worker each on core 0:", file=sys.stderr)
        per_conn, base = memory(ctx, True)

    print(f"drover vs {nginx_version.split(': ', 1)[-1]}, TLS 1.2+1.3, ECDSA P-256 certificate, "
          f"loopback; {ROUNDS} rounds x {DURATION}, medians")
    print_rates(pinned, f"1 worker each on core 0, wrk -t{pinned_threads} -c{pinned_connections} "
                        f"on core 1:", True)
    if unpinned:
        runs, threads, connections = unpinned
        print_rates(runs, f"{WORKERS} workers each, unpinned, wrk -t{threads} -c{connections} "
                          "(for reference; ratios are the pinned run's):", False)
    median = {key: statistics.median(values) for key, values in per_conn.items()}
    print(f"memory per idle TLS connection ({CONNS} connections, handshake + one GET / each, "
          "1 worker each, worker RSS; plain: the same over plain HTTP, on a fresh launch):")
    print(f"  {'':<8} {'B/conn':>9} {'KiB/conn':>9} {'range KiB':>15} {'RSS before':>12} "
          f"{'plain B':>9} {'TLS - plain':>12}")
    for name in ("nginx", "drover"):
        tls, plain = median[(name, True)], median[(name, False)]
        lo, hi = min(per_conn[(name, True)]) / 1024, max(per_conn[(name, True)]) / 1024
        print(f"  {name:<8} {tls:9.0f} {tls / 1024:9.2f} {lo:7.2f}–{hi:<7.2f} "
              f"{statistics.median(base[name]) / 1024:8.1f} MiB {plain:9.0f} {tls - plain:12.0f}")
    ratio = median[("drover", True)] / median[("nginx", True)]
    print(f"  drover/nginx: {ratio:.2f}x (no fixed target; lower is better)")


if __name__ == "__main__":
    main()
