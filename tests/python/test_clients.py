"""The real Scrapinghub clients (`pip install scrapinghub`) against `jobq serve`.

Usage: python3 tests/python/test_clients.py URL KEY
KEY must be allowed on every project. Each check uses its own project, so the
checks are independent of one another and of what the store held before.
Prints one line per check and a closing "N passed, M failed"; exits 1 on failure.
"""

import itertools
import json
import sys
import traceback

try:
    import requests
    from scrapinghub import HubstorageClient, ScrapinghubClient
    from scrapinghub.client.exceptions import BadRequest, NotFound, Unauthorized
    from scrapinghub.hubstorage.jobq import DuplicateJobError
except ImportError as exc:
    print("the scrapinghub package is missing (%s): pip install scrapinghub" % exc)
    sys.exit(3)

URL, KEY = sys.argv[1], sys.argv[2]
CHECKS = []
_projects = itertools.count(1000)


def check(fn):
    CHECKS.append(fn)
    return fn


def hs():
    return HubstorageClient(auth=KEY, endpoint=URL, use_msgpack=False)


def sc():
    return ScrapinghubClient(KEY, endpoint=URL, use_msgpack=False)


def new_project():
    return next(_projects)


@check
def push_start_finish_delete_with_hubstorage():
    pid = new_project()
    project = hs().get_project(pid)
    job = project.push_job("spider1", foo="bar", priority=3, nested={"a": [1, "é", None]})
    assert job.key.startswith("%d/1/" % pid), job.key
    meta = job.metadata
    assert meta["state"] == "pending" and meta["foo"] == "bar", dict(meta)
    assert meta["priority"] == 3 and meta["spider"] == "spider1" and meta["project"] == pid
    assert meta["nested"] == {"a": [1, "é", None]} and "pending_time" in meta
    started = project.jobq.start()
    assert started["key"] == job.key and started["state"] == "running", started
    assert started["auth"], started
    assert project.jobq.start() is None, "nothing else is pending"
    job.metadata.expire()
    assert job.metadata["state"] == "running" and "running_time" in job.metadata
    assert job.metadata.authtoken() == started["auth"]
    assert list(project.jobq.finish(job, close_reason="finished")) == [{"key": job.key, "prevstate": "running"}]
    job.metadata.expire()
    assert job.metadata["close_reason"] == "finished" and "finished_time" in job.metadata
    assert list(project.jobq.delete(job)) == [{"key": job.key, "prevstate": "finished"}]
    job.metadata.expire()
    assert job.metadata["state"] == "deleted"
    assert sc().get_project(pid).jobs.count(state="deleted") == 1


@check
def start_a_given_job_and_by_priority():
    pid = new_project()
    project = hs().get_project(pid)
    low = project.push_job("s", priority=0)
    high = project.push_job("s", priority=4)
    normal = project.push_job("s")
    assert project.jobq.start(botgroup_ignored="x")["key"] == high.key
    assert list(project.jobq.start(low)) == [{"key": low.key, "prevstate": "pending"}]
    assert project.jobq.start()["key"] == normal.key
    assert project.jobq.start() is None


@check
def separate_jobq_endpoint():
    pid = new_project()
    client = HubstorageClient(auth=KEY, endpoint=URL, jobq_endpoint=URL, use_msgpack=False)
    key = client.get_project(pid).push_job("s").key
    assert [j["key"] for j in client.get_project(pid).jobq.list(state="pending")] == [key]
    jobs = ScrapinghubClient(KEY, endpoint=URL, jobq_endpoint=URL, use_msgpack=False).get_project(pid).jobs
    assert jobs.count(state="pending") == 1


@check
def push_running_job_gets_a_token():
    pid = new_project()
    project = hs().get_project(pid)
    answer = project.jobq.push("s", state="running")
    assert answer["auth"] and answer["key"].startswith("%d/" % pid), answer
    meta = hs().get_job(answer["key"]).metadata
    assert "pending_time" not in meta and "running_time" in meta, dict(meta)


@check
def unique_conflicts_raise_duplicate_job_error():
    pid = new_project()
    project = hs().get_project(pid)
    first = project.push_job("s", unique="daily")
    try:
        project.push_job("s", unique="daily")
        raise AssertionError("a second active job with the same unique was accepted")
    except DuplicateJobError as exc:
        assert "Active job" in str(exc), exc
    list(project.jobq.finish(first))
    again = project.push_job("s", unique="daily")
    assert again.key != first.key


def seed_listing(pid):
    """Six jobs of two spiders: tags, states; returns the keys by name."""
    project = hs().get_project(pid)
    keys = {}
    for name, spider, tags in [
        ("a", "alpha", ["x"]),
        ("b", "alpha", ["y"]),
        ("c", "beta", ["x", "y"]),
        ("d", "beta", []),
        ("e", "alpha", ["z"]),
        ("f", "beta", ["x"]),
    ]:
        keys[name] = project.push_job(spider, tags=tags, label=name).key
    for name in "abcdf":
        list(project.jobq.finish(keys[name]))
    return project, keys


@check
def list_with_every_filter():
    pid = new_project()
    project, keys = seed_listing(pid)
    jq = project.jobq
    listed = [j["key"] for j in jq.list()]
    assert listed == [keys[n] for n in "fdcba"], listed
    row = next(jq.list(count=1))
    assert set(row) >= {"key", "state", "spider", "ts", "elapsed", "finished_time", "pending_time", "tags"}, row
    assert [j["key"] for j in jq.list(state="pending")] == [keys["e"]]
    assert len(list(jq.list(state=["pending", "finished"]))) == 6
    assert [j["key"] for j in jq.list(spider="beta")] == [keys[n] for n in "fdc"]
    assert [j["key"] for j in jq.list(has_tag=["x", "y"])] == [keys[n] for n in "fcba"]
    assert [j["key"] for j in jq.list(lacks_tag=["x", "y"])] == [keys["d"]]
    assert [j["key"] for j in jq.list(has_tag="x", lacks_tag="y")] == [keys[n] for n in "fa"]
    assert [j["key"] for j in jq.list(count=2)] == [keys[n] for n in "fd"]
    assert [j["key"] for j in jq.list(stop=keys["c"])] == [keys[n] for n in "fd"]
    assert [j["key"] for j in jq.list(key=[keys["a"], keys["c"]])] == [keys[n] for n in "ca"]
    legacy = jq.list(filter=[json.dumps(["tags", "haselement", ["y"]]), json.dumps(["spider", "=", ["beta"]])])
    assert [j["key"] for j in legacy] == [keys["c"]]
    rows = list(jq.list())
    ts = {r["key"]: r["ts"] for r in rows}
    window = [r["key"] for r in jq.list(startts=ts[keys["c"]], endts=ts[keys["f"]] + 1)]
    assert window == [k for k in listed if ts[keys["c"]] <= ts[k] <= ts[keys["f"]]], window
    assert list(jq.list(startts=ts[keys["f"]] + 1)) == []
    client_project = sc().get_project(pid)
    assert [j["key"] for j in client_project.jobs.list(start=1, count=2)] == [keys[n] for n in "dc"]
    meta_rows = client_project.jobs.list(meta=["label", "spider"], spider="alpha")
    assert [(r["label"], r["spider"]) for r in meta_rows] == [("b", "alpha"), ("a", "alpha")], meta_rows
    assert set(meta_rows[0]) == {"key", "state", "ts", "elapsed", "label", "spider"}, meta_rows[0]
    assert [j["key"] for j in client_project.jobs.iter(has_tag="x", state="finished")] == [keys[n] for n in "fca"]


@check
def count_with_every_filter():
    pid = new_project()
    _, keys = seed_listing(pid)
    jobs = sc().get_project(pid).jobs
    assert jobs.count() == 5
    assert jobs.count(state="pending") == 1
    assert jobs.count(state=["pending", "finished"]) == 6
    assert jobs.count(spider="alpha") == 2
    assert jobs.count(spider="nobody") == 0
    assert jobs.count(has_tag=["x", "y"]) == 4
    assert jobs.count(lacks_tag=["x", "y"]) == 1
    assert jobs.count(has_tag="x", lacks_tag="y", spider="beta") == 1
    assert jobs.count(startts=0, endts=1) == 0
    assert jobs.count(startts=0) == 5


@check
def summary_and_jobsummary():
    pid = new_project()
    project, keys = seed_listing(pid)
    summary = project.jobq.summary()
    assert [(s["name"], s["count"]) for s in summary] == [("pending", 1), ("running", 0), ("finished", 5)]
    assert len(summary[2]["summary"]) == 5
    pending = project.jobq.summary("pending")
    assert pending["count"] == 1 and pending["summary"][0]["key"] == keys["e"], pending
    finished = project.jobq.summary("finished", count=2, start=1, jobmeta=["label"])
    assert [r["label"] for r in finished["summary"]] == ["d", "c"], finished
    client_jobs = sc().get_project(pid).jobs
    beta = client_jobs.summary("finished", spider="beta")
    assert beta["count"] == 3, beta
    assert [s["name"] for s in client_jobs.summary()] == ["pending", "running", "finished"]
    js = list(project.jobq.jobsummary([keys["c"], keys["a"], "%d/9/9" % pid], ["label", "state"]))
    assert [(r["key"], r["label"], r["state"]) for r in js] == [
        (keys["c"], "c", "finished"),
        (keys["a"], "a", "finished"),
    ], js


def seed_reasons(pid):
    """Jobs finished with close_reasons (one cancelled by the client), tags for has_tag_all;
    returns the keys by name."""
    project = hs().get_project(pid)
    keys = {}
    for name, tags, reason in [
        ("a", ["x", "y"], "finished"),
        ("b", ["x"], "failed"),
        ("c", ["x", "y", "z"], "failed"),
        ("d", ["y"], None),
        ("e", ["x", "y"], "shutdown"),
    ]:
        keys[name] = project.push_job("s", tags=tags).key
        if reason:
            list(project.jobq.finish(keys[name], close_reason=reason))
    keys["f"] = project.push_job("s", tags=["y"]).key
    sc().get_project(pid).jobs.cancel(keys=[keys["f"]])
    list(project.jobq.finish(keys["d"]))
    return keys


@check
def close_reason_and_has_tag_all_filters():
    pid = new_project()
    keys = seed_reasons(pid)
    jobs = sc().get_project(pid).jobs
    assert jobs.count(close_reason="failed") == 2
    assert jobs.count(close_reason=["failed", "cancelled"]) == 3
    assert jobs.count(close_reason="nobody-closes-so") == 0
    assert jobs.list(close_reason="nobody-closes-so") == []
    assert [j["key"] for j in jobs.list(close_reason="failed")] == [keys["c"], keys["b"]]
    assert [j["key"] for j in jobs.iter(close_reason="cancelled")] == [keys["f"]]
    rows = jobs.list(close_reason=["failed", "shutdown"], has_tag="z", meta=["close_reason"])
    assert [(r["key"], r["close_reason"]) for r in rows] == [(keys["c"], "failed")], rows
    # The clients' summary() takes no extra parameters: summary is tested over plain
    # HTTP (tests/http/extensions.rs), and here with requests.
    summary = requests.get("%sjobq/%d/summary/finished" % (URL, pid), auth=(KEY, ""),
                           params={"close_reason": "failed", "has_tag_all": ["x", "z"]}).json()
    assert summary["count"] == 1 and summary["summary"][0]["key"] == keys["c"], summary
    assert [j["key"] for j in hs().get_project(pid).jobq.list(close_reason="shutdown")] == [keys["e"]]
    assert jobs.count(has_tag_all=["x", "y"]) == 3
    assert [j["key"] for j in jobs.list(has_tag_all=["x", "y"], lacks_tag="z")] == [keys["e"], keys["a"]]
    # (x or z) and y and not z
    assert jobs.count(has_tag=["x", "z"], has_tag_all="y", lacks_tag="z") == 2


@check
def paging_by_startafter():
    pid = new_project()
    project = hs().get_project(pid)
    pushed = [project.push_job("s", n=i).key for i in range(25)]
    for k in pushed:
        list(project.jobq.finish(k))
    jobs = sc().get_project(pid).jobs
    seen, after = [], None
    while True:
        page = jobs.list(count=10, startafter=after) if after else jobs.list(count=10)
        if not page:
            break
        seen.extend(j["key"] for j in page)
        after = page[-1]["key"]
    assert seen == pushed[::-1], seen
    assert [j["key"] for j in jobs.iter(startafter=pushed[5], count=2)] == [pushed[4], pushed[3]]
    assert [j["key"] for j in project.jobq.list(startafter=pushed[5], start=1)] == pushed[3::-1]
    unknown = "%d/1/999" % pid
    try:
        jobs.list(startafter=unknown)
        raise AssertionError("an unknown startafter key gave a page")
    except BadRequest as exc:
        assert unknown in exc.http_error.response.json()["error"], exc


@check
def spider_wide_update_and_tags():
    pid = new_project()
    project, keys = seed_listing(pid)
    alpha = sc().get_project(pid).spiders.get("alpha")
    assert alpha.key == "%d/1" % pid and alpha.name == "alpha"
    changed = list(project.jobq.update(alpha.key, add_tag=["bulk"], remove_tag=["x"]))
    assert sorted(c["key"] for c in changed) == sorted(keys[n] for n in "abe"), changed
    assert alpha.jobs.count(has_tag="bulk", state=["pending", "finished"]) == 3
    assert alpha.jobs.count(has_tag="x") == 0
    assert [j["key"] for j in alpha.jobs.list(has_tag="bulk")] == [keys["b"], keys["a"]]
    changed = list(project.jobq.update(alpha.key, state="deleted"))
    assert {c["prevstate"] for c in changed} == {"pending", "finished"}
    assert alpha.jobs.count(state="deleted") == 3
    assert list(project.jobq.update(alpha.key, state="finished")) == [], "deleted jobs are left alone"


@check
def metadata_get_set_delete_update():
    pid = new_project()
    key = hs().get_project(pid).push_job("s", keep="me").key
    job = sc().get_job(key)
    assert job.metadata.get("keep") == "me"
    job.metadata.set("x", {"deep": [1, 2.5, "ü"]})
    assert job.metadata.get("x") == {"deep": [1, 2.5, "ü"]}
    job.metadata.update({"a": 1, "b": "two"})
    values = dict(job.metadata.list())
    assert values["a"] == 1 and values["b"] == "two" and values["keep"] == "me" and values["state"] == "pending"
    job.metadata.delete("x")
    assert "x" not in dict(job.metadata.iter())
    assert job.metadata.get("x") is None, "a field the job lacks reads as null"
    job.metadata.set("tags", ["t1", "t2"])
    assert job.metadata.get("tags") == ["t1", "t2"]
    job.metadata.set("priority", 4)
    assert job.metadata.get("priority") == 4
    try:
        job.metadata.set("state", "finished")
        raise AssertionError("setting state through metadata was accepted")
    except BadRequest:
        pass
    hjob = hs().get_job(key)
    hjob.metadata["y"] = [True, None]
    del hjob.metadata["a"]
    hjob.metadata.save()
    hjob.metadata.expire()
    assert hjob.metadata["y"] == [True, None] and "a" not in hjob.metadata
    assert hjob.metadata["state"] == "pending", "saving posts the whole metadata back; state is kept"
    hjob.update_metadata(z=3)
    assert hjob.metadata["z"] == 3


@check
def client_job_state_methods():
    pid = new_project()
    key = hs().get_project(pid).push_job("s").key
    job = sc().get_project(pid).jobs.get(key)
    assert job.start(worker="w1") == "pending"
    assert job.metadata.get("worker") == "w1"
    assert job.finish(close_reason="done") == "running"
    assert job.update("finished") == "finished"
    assert job.delete() == "finished"
    try:
        sc().get_project(pid).jobs.get("%d/1/999" % pid).finish()
        raise AssertionError("finishing a missing job did not raise")
    except NotFound:
        pass


@check
def cancel_pending_and_running():
    pid = new_project()
    project = hs().get_project(pid)
    pending = project.push_job("s").key
    running = project.push_job("s").key
    done = project.push_job("s").key
    list(project.jobq.start(running))
    list(project.jobq.finish(done))
    jobs = sc().get_project(pid).jobs
    assert jobs.cancel(keys=[pending, running, done]) == {"count": 2}
    assert sc().get_job(pending).metadata.get("state") == "finished"
    assert sc().get_job(pending).metadata.get("close_reason") == "cancelled"
    running_meta = dict(sc().get_job(running).metadata.iter())
    assert running_meta["state"] == "running" and "cancelled_by" in running_meta, running_meta
    other = project.push_job("s")
    other.request_cancel()
    assert sc().get_job(other.key).metadata.get("close_reason") == "cancelled"
    sc().get_job(project.push_job("s").key).cancel()


@check
def spiders_and_ids():
    pid = new_project()
    project = hs().get_project(pid)
    project.push_job("first")
    assert project.ids.spider("first") == 1
    assert project.ids.spider("nobody") is None
    assert project.ids.spider("second", create=1) == 2
    client_project = sc().get_project(pid)
    assert client_project.spiders.get("second").key == "%d/2" % pid
    try:
        client_project.spiders.get("nobody")
        raise AssertionError("an unknown spider was found")
    except NotFound:
        pass
    assert isinstance(hs().server_timestamp(), int)


@check
def job_token_reaches_its_own_job_only():
    pid = new_project()
    project = hs().get_project(pid)
    key = project.push_job("s").key
    token = project.jobq.start()["auth"]
    own = HubstorageClient(auth=(key, token), endpoint=URL, use_msgpack=False)
    job = own.get_job(key)
    assert job.metadata["state"] == "running"
    job.metadata["progress"] = 50
    job.metadata.save()
    assert hs().get_job(key).metadata["progress"] == 50
    try:
        list(own.get_project(pid).jobq.list())
        raise AssertionError("a job token listed the project")
    except requests.HTTPError as exc:
        assert exc.response.status_code == 403, exc


@check
def errors_reach_the_client():
    pid = new_project()
    jobs = sc().get_project(pid).jobs
    for bad in [dict(state="bogus"), dict(startts="yesterday"), dict(count=-1)]:
        try:
            jobs.list(**bad)
            raise AssertionError("accepted %r" % bad)
        except BadRequest:
            pass
    try:
        ScrapinghubClient("not-a-key", endpoint=URL, use_msgpack=False).get_project(pid).jobs.count()
        raise AssertionError("an unknown key was accepted")
    except Unauthorized:
        pass
    try:
        list(hs().get_project(pid).jobq.update("%d/1/1" % (pid + 1), state="finished"))
        raise AssertionError("a key of another project was accepted")
    except requests.HTTPError as exc:
        assert exc.response.status_code == 400 and "project" in exc.response.json()["error"]


@check
def change_feed_and_waiting_startjob():
    """Our extensions, through the client's own requests (the JobQ resource passes
    query parameters along): the change feed, long-polled, and startjob?wait."""
    import threading
    import time
    pid = new_project()
    project = hs().get_project(pid)
    jobq = project.jobq
    key = project.push_job("spider1", tags=["a"]).key
    jobq.finish(key, close_reason="failed")
    got = list(jobq.apiget("changes", params={"since": 0}))
    assert [(c["key"], c["state"], c["prevstate"]) for c in got] == [
        (key, "pending", None), (key, "finished", "pending")], got
    assert got[0]["spider"] == "spider1" and got[0]["seq"] < got[1]["seq"], got
    only = list(jobq.apiget("changes", params={"since": 0, "close_reason": ["failed", "x"], "has_tag_all": "a"}))
    assert [c["state"] for c in only] == ["finished"], only
    # A waiting feed gets the next change; a waiting startjob the next pushed job.
    answers = {}

    def feed():
        answers["feed"] = list(jobq.apiget("changes", params={"since": got[1]["seq"], "wait": 20}))

    def start():
        answers["start"] = list(jobq.apipost("startjob", params={"wait": 20}, jl={"botgroup": "g"}))

    waiters = [threading.Thread(target=feed), threading.Thread(target=start)]
    for t in waiters:
        t.start()
    time.sleep(0.5)
    assert not answers, answers
    pushed = project.push_job("spider2").key
    for t in waiters:
        t.join(30)
    # The feed answers with what is there when it wakes: the push, and the
    # waiting startjob's change too when that came first (under load).
    feed = [(c["key"], c["state"]) for c in answers["feed"]]
    assert feed in ([(pushed, "pending")], [(pushed, "pending"), (pushed, "running")]), answers
    assert [(j["key"], j["state"], j["botgroup"]) for j in answers["start"]] == [(pushed, "running", "g")], answers
    try:
        list(jobq.apiget("changes", params={"wait": "soon"}))
        raise AssertionError("a bad wait was accepted")
    except requests.HTTPError as exc:
        assert exc.response.status_code == 400 and "wait" in exc.response.json()["error"], exc


def main():
    passed = failed = 0
    for fn in CHECKS:
        try:
            fn()
        except Exception:
            failed += 1
            print("FAIL %s\n%s" % (fn.__name__, traceback.format_exc()))
        else:
            passed += 1
            print("ok   %s" % fn.__name__)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
