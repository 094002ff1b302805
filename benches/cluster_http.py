#!/usr/bin/env python3
"""Issue 14's read and write goals over HTTP: one single `jobq serve` and a three-node
cluster (`serve --node-id`, default timeouts), each on its own temp directory, release
build, on this machine.

(a) `GET /jobq/1/count?state=pending` latency, p50/p99 over N requests on C keep-alive
    connections (each C in --conc): at the single node, at a linearizable follower, at
    the leader; (b) the same count at the follower restarted with `--read-consistency
    stale`, for reference; (c) durable pushes/s (`POST /jobq/1/push`, one job a request)
    from 32 clients on keep-alive connections for --secs seconds: at the single node, at
    the leader, and at a follower (forwarded to the leader).
Each measurement is repeated --rounds times, alternating the targets; the medians are
printed last, with the load average before and after. The client is a raw-socket
HTTP/1.1 client (requests pre-built) so that its own cost stays small and the same for
every target; it runs on the same cores as the servers.

    cargo build --release --locked --bin jobq && python3 benches/cluster_http.py

JOBQ_BIN overrides the binary (default target/release/jobq). Options: --n 4000
--conc 1,8 --rounds 3 --secs 5 --clients 32 --procs 4 --jobs 1000 --skip-pushes
--skip-reads; --bg-writers K: K clients push at the leader (and at the single node)
all through the count measurements, so that reads wait for fresh commits. Extra
serve flags for the cluster after `--`."""
import argparse, base64, json, multiprocessing, os, shutil, socket, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("JOBQ_BIN", os.path.join(HERE, "..", "target", "release", "jobq"))
AUTH = "Basic " + base64.b64encode(b"admin:").decode()
COUNT = f"GET /jobq/1/count?state=pending HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n\r\n".encode()
JOB = b'{"spider":"spider-7","priority":2,"tags":["tag-0","tag-13"],"units":1}'
PUSH = (f"POST /jobq/1/push HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n"
        f"Content-Length: {len(JOB)}\r\n\r\n").encode() + JOB


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Conn:
    """One keep-alive connection; `call` sends pre-built bytes and reads one answer."""

    def __init__(self, port):
        self.port = port
        self.s = None
        self.buf = b""

    def call(self, req):
        if self.s is None:
            self.s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        self.s.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
            elif k == b"connection" and b"close" in v.lower():
                close = True
        self.buf = rest
        if chunked:
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._more()
                size, _, self.buf = self.buf.partition(b"\r\n")
                n = int(size.split(b";")[0], 16)
                while len(self.buf) < n + 2:
                    self._more()
                body += self.buf[:n]
                self.buf = self.buf[n + 2:]
                if n == 0:
                    break
        else:
            while len(self.buf) < length:
                self._more()
            body, self.buf = self.buf[:length], self.buf[length:]
        if close:
            self.close()
        return status, body

    def _more(self):
        d = self.s.recv(65536)
        if not d:
            raise ConnectionError("closed by the server")
        self.buf += d

    def close(self):
        if self.s is not None:
            self.s.close()
            self.s = None


def get(port, path, timeout=5):
    req = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nConnection: close\r\n\r\n".encode()
    c = Conn(port)
    try:
        return c.call(req)
    except Exception as e:
        return None, str(e).encode()
    finally:
        c.close()


class Node:
    def __init__(self, base, name, port, args):
        self.base, self.name, self.port, self.args, self.p = base, name, port, args, None

    def start(self, extra=()):
        cmd = [BIN, "serve", "--data", f"{self.base}/{self.name}", "--listen", f"127.0.0.1:{self.port}",
               "--api-key", "admin", *self.args, *extra]
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(f"{self.base}/{self.name}.log", "a"))
        deadline = time.time() + 30
        while get(self.port, "/health")[0] != 200:
            assert self.p.poll() is None, f"{self.name} exited; see {self.base}/{self.name}.log"
            assert time.time() < deadline, f"{self.name} did not start"
            time.sleep(0.05)

    def stop(self):
        if self.p:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
            self.p = None


def leader_of(nodes):
    deadline = time.time() + 30
    while time.time() < deadline:
        seen = set()
        for n in nodes:
            s, b = get(n.port, "/cluster")
            seen.add(json.loads(b)["leader"] if s == 200 else None)
        if len(seen) == 1 and None not in seen:
            return seen.pop()
        time.sleep(0.1)
    raise SystemExit(f"no agreed leader: {seen}")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def latencies(port, n, conc):
    """n counts over conc connections; every latency in µs."""
    out, errors = [], []
    per = [n // conc + (i < n % conc) for i in range(conc)]

    def worker(k):
        c, mine = Conn(port), []
        try:
            for _ in range(5):
                c.call(COUNT)
            for _ in range(k):
                t = time.perf_counter()
                s, b = c.call(COUNT)
                mine.append((time.perf_counter() - t) * 1e6)
                if s != 200:
                    errors.append((s, b))
        finally:
            c.close()
        out.extend(mine)

    ts = [threading.Thread(target=worker, args=(k,)) for k in per]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    return out


def push_proc(port, threads, secs, start_at, q):
    done, errors = [0] * threads, []

    def worker(i):
        c = Conn(port)
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + secs
        while time.time() < end:
            s, b = c.call(PUSH)
            if s == 200:
                done[i] += 1
            else:
                errors.append((s, b[:200]))
        c.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put((sum(done), errors[:3]))


def pushes(port, clients, procs, secs):
    q = multiprocessing.Queue()
    start_at = time.time() + 0.5
    per = [clients // procs + (i < clients % procs) for i in range(procs)]
    ps = [multiprocessing.Process(target=push_proc, args=(port, k, secs, start_at, q)) for k in per if k]
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    errors = [e for _, es in results for e in es]
    assert not errors, errors
    return sum(n for n, _ in results) / secs


def bg_proc(port, writers, stop):
    def worker():
        c = Conn(port)
        while not stop.is_set():
            s, b = c.call(PUSH)
            assert s == 200, b
        c.close()

    ts = [threading.Thread(target=worker) for _ in range(writers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def background(node, writers):
    """`writers` clients pushing at `node` (from another process) until the
    returned function is called."""
    if writers == 0:
        return lambda: None
    stop = multiprocessing.Event()
    p = multiprocessing.Process(target=bg_proc, args=(node.port, writers, stop))
    p.start()
    time.sleep(0.2)

    def finish():
        stop.set()
        p.join()

    return finish


def load():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def median(xs):
    return sorted(xs)[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--conc", default="1,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--skip-pushes", action="store_true")
    ap.add_argument("--skip-reads", action="store_true")
    ap.add_argument("--bg-writers", type=int, default=0)
    ap.add_argument("extra", nargs="*", help="serve flags for the cluster nodes (after --)")
    a = ap.parse_args()
    concs = [int(x) for x in a.conc.split(",")]
    base = tempfile.mkdtemp(prefix="jobq-cluster-http-")
    with open(f"{base}/K", "w") as f:
        f.write("cluster-key-0123456789\n")
    ports = free_ports(4)
    peers = [x for i in range(3) for x in ("--peer", f"{i + 1}=127.0.0.1:{ports[i + 1]}")]
    single = Node(base, "single", ports[0], [])
    three = [Node(base, f"n{i + 1}", ports[i + 1],
                  ["--node-id", str(i + 1), *peers, "--cluster-key-file", f"{base}/K", *a.extra]) for i in range(3)]
    print(f"binary {BIN}; load {load()}; {os.cpu_count()} cpus", flush=True)
    try:
        single.start()
        for n in three:
            n.p = None
        # Start the three together: the lowest id forms the cluster once every peer answers.
        starters = [threading.Thread(target=n.start) for n in three]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        lid = leader_of(three)
        leader = three[lid - 1]
        follower = next(n for n in three if n is not leader)
        print(f"leader node {lid}, follower measured: {follower.name}", flush=True)
        # The same jobs everywhere: --jobs pending jobs in project 1.
        for port in (single.port, leader.port):
            c = Conn(port)
            for _ in range(a.jobs):
                s, b = c.call(PUSH)
                assert s == 200, b
            c.close()
        # The follower has applied them (a linearizable read waits for it).
        assert get(follower.port, "/jobq/1/count?state=pending")[1].strip() == str(a.jobs).encode()
        results = {}

        def record(key, value):
            results.setdefault(key, []).append(value)

        if not a.skip_reads:
            targets = [("single node", single), ("follower, linearizable", follower), ("leader, linearizable", leader)]
            for r in range(a.rounds):
                for conc in concs:
                    for name, node in targets:
                        bg = background(single if node is single else leader, a.bg_writers)
                        xs = latencies(node.port, a.n, conc)
                        bg()
                        p50, p99 = pct(xs, 50), pct(xs, 99)
                        record((name, conc, "p50"), p50)
                        record((name, conc, "p99"), p99)
                        print(f"round {r} C={conc} {name}: p50 {p50:.0f} µs p99 {p99:.0f} µs (load {load()})",
                              flush=True)
        if not a.skip_pushes:
            targets = [("single node", single), ("cluster leader", leader), ("cluster follower", follower)]
            for r in range(a.rounds):
                for name, node in targets:
                    rate = pushes(node.port, a.clients, a.procs, a.secs)
                    record((name, "pushes"), rate)
                    print(f"round {r} {a.clients} clients {name}: {rate:,.0f} pushes/s (load {load()})", flush=True)
        if not a.skip_reads:
            # The follower again, with --read-consistency stale (a restart), for reference.
            follower.stop()
            follower.start(["--read-consistency", "stale"])
            want = get(leader.port, "/jobq/1/count?state=pending")[1].strip()
            deadline = time.time() + 30
            while get(follower.port, "/jobq/1/count?state=pending")[1].strip() != want:
                assert time.time() < deadline, "the restarted follower did not catch up"
                time.sleep(0.1)
            for r in range(a.rounds):
                for conc in concs:
                    bg = background(leader, a.bg_writers)
                    xs = latencies(follower.port, a.n, conc)
                    bg()
                    record(("follower, stale", conc, "p50"), pct(xs, 50))
                    record(("follower, stale", conc, "p99"), pct(xs, 99))
                    print(f"round {r} C={conc} follower, stale: p50 {pct(xs, 50):.0f} µs "
                          f"p99 {pct(xs, 99):.0f} µs (load {load()})", flush=True)
        print(f"\nmedians of {a.rounds} rounds (load now {load()}):")
        if not a.skip_reads:
            for conc in concs:
                s50, s99 = median(results[("single node", conc, "p50")]), median(results[("single node", conc, "p99")])
                for name in ("single node", "follower, linearizable", "leader, linearizable", "follower, stale"):
                    p50, p99 = median(results[(name, conc, "p50")]), median(results[(name, conc, "p99")])
                    print(f"count C={conc} {name:24} p50 {p50:7.0f} µs ({p50 / s50:.2f}x)  "
                          f"p99 {p99:7.0f} µs ({p99 / s99:.2f}x)")
        if not a.skip_pushes:
            s = median(results[("single node", "pushes")])
            for name in ("single node", "cluster leader", "cluster follower"):
                v = median(results[(name, "pushes")])
                print(f"durable pushes, {a.clients} clients, {name:16} {v:9,.0f}/s ({100 * v / s:.0f}%)")
    finally:
        for n in [single, *three]:
            n.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
