"""Write N jobs of one project as JSON lines in the `jobq import` format.

Usage: python3 gen_jobs.py N [PROJECT] > jobs.jsonl
Deterministic (seeded). 20 spiders; 90% finished, 5% pending, 2% running,
3% deleted; 0-3 tags out of 50; timestamps spread over the last 30 days.
"""

import json
import random
import sys
import time

n = int(sys.argv[1])
project = int(sys.argv[2]) if len(sys.argv) > 2 else 53
rng = random.Random(42)
now = int(time.time() * 1000)
next_id = {}
out = sys.stdout
for i in range(n):
    spider = 1 + min(int(rng.paretovariate(1.2)) - 1, 19)
    job = next_id[spider] = next_id.get(spider, 0) + 1
    r = rng.random()
    state = "finished" if r < 0.90 else "pending" if r < 0.95 else "running" if r < 0.97 else "deleted"
    pending = now - 30 * 86_400_000 + i * (30 * 86_400_000 // n)
    doc = {
        "key": "%d/%d/%d" % (project, spider, job),
        "spider": "spider%d" % spider,
        "state": state,
        "priority": rng.randint(0, 4),
        "tags": sorted({"tag%d" % rng.randint(1, 50) for _ in range(rng.randint(0, 3))}),
        "pending_time": pending,
        "units": 1,
        "version": "1.%d" % rng.randint(0, 9),
        "spider_args": {"url": "https://example.com/%d" % rng.randint(0, 10**6), "depth": rng.randint(1, 5)},
    }
    if state != "pending":
        doc["running_time"] = pending + 1000
    if state in ("finished", "deleted"):
        doc["finished_time"] = pending + 60_000
        doc["close_reason"] = "finished"
    if state == "deleted":
        doc["deleted_time"] = pending + 120_000
    out.write(json.dumps(doc) + "\n")
