#!/usr/bin/env python3
"""Failover of a three-node cluster (issue 14): start three `jobq serve --node-id` on
loopback, then N times: kill -9 the leader, time until a survivor accepts a push again
(one try every 10 ms), restart the killed node. Prints each kill and min/median/p99/max.

    cargo build --bin jobq && python3 benches/cluster_failover.py 50 [serve flags...]

JOBQ_BIN overrides the binary (default target/debug/jobq); extra arguments go to every
`serve` (e.g. --election-ms 300)."""
import subprocess, time, json, urllib.request, base64, os, shutil, sys, tempfile, math
BIN=os.environ.get("JOBQ_BIN", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "debug", "jobq"))
base=tempfile.mkdtemp(prefix="jobq-failover-")
open(base+"/K","w").write("cluster-key-0123456789\n")
ports=[18171,18172,18173]
auth="Basic "+base64.b64encode(b"admin:").decode()
def spawn(i):
    args=[BIN,"serve","--data",f"{base}/d{i}","--listen",f"127.0.0.1:{ports[i]}","--node-id",str(i+1),"--cluster-key-file",base+"/K","--api-key","admin"]
    for j,p in enumerate(ports): args+=["--peer",f"{j+1}=127.0.0.1:{p}"]
    args+=sys.argv[2:]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(f"{base}/log{i}","a"))
def req(i, path, body=None, timeout=10):
    r=urllib.request.Request(f"http://127.0.0.1:{ports[i]}{path}", data=body, headers={"Authorization":auth})
    try:
        with urllib.request.urlopen(r, timeout=timeout) as f: return f.status, f.read()
    except urllib.error.HTTPError as e: return e.code, e.read()
    except Exception as e: return None, str(e)
procs=[spawn(i) for i in range(3)]
def leader():
    for i in range(3):
        if procs[i] is None: continue
        s,b=req(i,"/cluster")
        if s==200:
            l=json.loads(b)["leader"]
            if l: return l-1
    return None
times=[]
for k in range(int(sys.argv[1])):
    t=time.time()
    while True:
        l=leader()
        if l is not None and req(l,"/jobq/1/push",b'{"spider":"s"}')[0]==200: break
        time.sleep(0.05)
        assert time.time()-t<30
    time.sleep(0.5)
    procs[l].kill(); procs[l].wait(); procs[l]=None
    t0=time.time()
    s=(l+1)%3
    while True:
        st,_=req(s,"/jobq/1/push",b'{"spider":"s"}', timeout=15)
        if st==200: break
        time.sleep(0.01)
    times.append(time.time()-t0)
    print(f"kill {k}: leader node {l+1}, writes accepted again after {times[-1]:.2f} s", flush=True)
    procs[l]=spawn(l)
    time.sleep(1)
for p in procs: p.kill()
times.sort()
p99=times[min(len(times)-1, math.ceil(0.99*len(times))-1)]
print("n", len(times), "min %.2f median %.2f p99 %.2f max %.2f" % (times[0], times[len(times)//2], p99, times[-1]))
shutil.rmtree(base, ignore_errors=True)
