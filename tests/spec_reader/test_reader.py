#!/usr/bin/env python3
"""Checks the spec-only reader (reader.py) against the v1 format fixture.

    python3 tests/spec_reader/test_reader.py

Standard library only, no pytest. The fixture is never modified: every test works on a
copy in a temporary directory, and the fixture's bytes are compared before and after.
The frame walk, record decoder and index builder below are deliberately minimal and
written apart from reader.py (from format-spec/ as well), so the two check each other.
"""

import contextlib
import decimal
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "v1")
STORE = os.path.join(FIXTURE, "store")
EXPORT = os.path.join(FIXTURE, "export.jsonl")
SPEC_LOG = os.path.join(REPO, "format-spec", "log.md")
READER = os.path.join(HERE, "reader.py")
STATES = ("pending", "running", "finished", "deleted")

sys.path.insert(0, HERE)
import reader  # noqa: E402


# --------------------------------------------------------------------------- helpers

def run(store, *args):
    p = subprocess.run([sys.executable, READER, store, *args], capture_output=True, text=True)
    assert "Traceback" not in p.stderr, f"reader printed a traceback for {args}:\n{p.stderr}"
    return p


def run_in(store, *args):
    """reader.main in this process (fast): (rc, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = reader.main(["reader.py", store, *args])
    return rc, out.getvalue(), err.getvalue()


def mcrc(b):
    c = zlib.crc32(b) & 0xFFFFFFFF
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def parse_jsonl(text):
    """Lossless: numbers with a fraction are Decimals, big ints stay ints, objects keep field order."""
    return [json.loads(line, parse_float=decimal.Decimal, object_pairs_hook=list)
            for line in text.splitlines() if line.strip()]


def jobs_only(lines):
    """The job lines of an export (catalog lines, `{"spider_catalog": ...}`, left out)."""
    return [r for r in lines if r and r[0][0] != "spider_catalog"]


def expected_export():
    """The jobs of the fixture's export."""
    with open(EXPORT, encoding="utf-8") as f:
        return jobs_only(parse_jsonl(f.read()))


def key_of(r):
    return dict(r)["key"]


def export_of(store):
    rc, out, err = run_in(store, "export")
    assert rc == 0, f"export failed: {err}"
    return jobs_only(parse_jsonl(out))


def fresh_copy(tmp, name="store"):
    dst = os.path.join(tmp, name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(STORE, dst)
    return dst


def gen_dir(store):
    gens = [e for e in os.listdir(store) if e.startswith("gen-")]
    assert len(gens) == 1, gens
    return os.path.join(store, gens[0])


def segments(store):
    g = gen_dir(store)
    return [os.path.join(g, e) for e in sorted(os.listdir(g)) if e.startswith("log-") and e.endswith(".jql")]


def index_files(store):
    g = gen_dir(store)
    return [os.path.join(g, e) for e in sorted(os.listdir(g)) if e.startswith("idx-") and e.endswith(".jqi")]


def decode_body(body):
    project, spider, job, state, mask, flags, _, prio, oseq = struct.unpack_from("<IIIBBBBqQ", body, 0)
    times = struct.unpack_from("<4Q", body, 32)
    p = 64
    (nt,) = struct.unpack_from("<H", body, p)
    p += 2
    tags = []
    for _ in range(nt):
        (tl,) = struct.unpack_from("<H", body, p)
        tags.append(body[p + 2:p + 2 + tl].decode())
        p += 2 + tl
    unique = None
    if flags & 1:
        (ul,) = struct.unpack_from("<H", body, p)
        unique = body[p + 2:p + 2 + ul].decode()
        p += 2 + ul
    (dl,) = struct.unpack_from("<I", body, p)
    return {"project": project, "spider": spider, "job": job, "state": state, "priority": prio,
            "order_seq": oseq, "ts": times[state], "tags": tags, "unique": unique,
            "doc": body[p + 4:p + 4 + dl].decode(), "key": f"{project}/{spider}/{job}"}


def raw_frames(path):
    """A minimal frame walk (lengths only, no validation), independent of reader.py."""
    with open(path, "rb") as f:
        data = f.read()
    off, out = 64, []
    while off + 32 <= len(data):
        ln, kind, flags, _, count, first_seq, durable = struct.unpack_from("<IBBHIQQ", data, off + 4)
        end = off + 32 + ln
        if end > len(data):
            break
        recs, payload = [], data[off + 32:end]
        if kind == 1:
            p = off + 32
            for i in range(count):
                bl = struct.unpack_from("<I", data, p)[0]
                r = decode_body(data[p + 8:p + 8 + bl])
                r.update(off=p, seq=first_seq + i, end=p + 8 + bl)
                recs.append(r)
                p += 8 + bl
        out.append({"off": off, "end": end, "kind": kind, "flags": flags, "count": count,
                    "first_seq": first_seq, "last_seq": first_seq + count - 1, "durable_seq": durable,
                    "recs": recs, "keys": [r["key"] for r in recs], "payload": payload})
        off = end
    return out


def fixture_digest():
    h = hashlib.sha256()
    for base, dirs, files in sorted(os.walk(FIXTURE)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(base, f)
            h.update(p.encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def flip(path, offset, mask=0x5A):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def assert_export_without(store, gone_keys, why):
    want = [r for r in expected_export() if key_of(r) not in gone_keys]
    got = export_of(store)
    assert got == want, f"{why}: export differs; got keys {[key_of(r) for r in got]}"
    assert len(expected_export()) - len(want) == len(gone_keys), f"{why}: {gone_keys} not all in the export"


def listing_from_export(records, project):
    """ts descending, ties by order_seq descending; export is in order_seq order within a project."""
    rows = [(dict(r), i) for i, r in enumerate(records) if dict(r)["project"] == project]
    rows.sort(key=lambda x: (x[0][x[0]["state"] + "_time"], x[1]), reverse=True)
    return [d["key"] for d, _ in rows]


def assert_corruption(store, cmds, seg, off, why):
    for cmd in cmds:
        rc, out, err = run_in(store, *cmd)
        assert rc == 1, f"{why}: {cmd} succeeded:\n{out}{err}"
        assert os.path.basename(seg) in err, f"{why}: {cmd}: error does not name the segment: {err}"
        assert f"offset {off}:" in err, f"{why}: {cmd}: error does not name offset {off}: {err}"
        assert "corruption" in err, f"{why}: {cmd}: {err}"


# --------------------------------------------------------------------------- an index builder (index.md)

def _posting(docs):
    blocks = {}
    for d in docs:
        blocks.setdefault(d >> 16, []).append(d & 0xFFFF)
    c = len(blocks)
    head, data = struct.pack("<II", len(docs), c), b""
    for blk, lows in sorted(blocks.items()):
        if len(lows) <= 4096:
            kind, part = 0, struct.pack(f"<{len(lows)}H", *lows)
        else:
            words = [0] * 1024
            for v in lows:
                words[v >> 6] |= 1 << (v & 63)
            kind, part = 1, struct.pack("<1024Q", *words)
        head += struct.pack("<HHII", blk, kind, len(lows), 8 + 12 * c + len(data))
        data += part
    return head + data


def _pad8(b):
    return b + b"\0" * (-len(b) % 8)


def build_index(store, lo, hi, next_id_bump=0):
    """idx-<lo>-<hi>.jqi for the single-segment fixture log, from format-spec/index.md."""
    seg = segments(store)[0]
    frames = raw_frames(seg)
    last = [f for f in frames if f["first_seq"] <= hi <= f["last_seq"]][0]
    assert last["last_seq"] == hi and any(f["first_seq"] == lo for f in frames)
    newest, names, maxjob = {}, {}, {}
    for f in frames:
        if f["first_seq"] > hi:
            break
        if f["kind"] == 2:
            p, s, nl = struct.unpack_from("<IIH", f["payload"])
            names[(p, s)] = f["payload"][10:10 + nl]
        for r in f["recs"]:
            maxjob[(r["project"], r["spider"])] = max(maxjob.get((r["project"], r["spider"]), 0), r["job"])
            if r["seq"] >= lo:
                newest[r["key"]] = r
    sections = []
    for project in sorted({r["project"] for r in newest.values()}):
        docs = sorted((r for r in newest.values() if r["project"] == project),
                      key=lambda r: (r["ts"], r["order_seq"]), reverse=True)
        n = len(docs)
        keys = [(r["spider"] << 32) | r["job"] for r in docs]
        skeys = sorted(keys)
        cols = struct.pack(f"<{n}Q", *[r["ts"] for r in docs]) + struct.pack(f"<{n}Q", *[r["order_seq"] for r in docs])
        cols += struct.pack(f"<{n}Q", *keys) + struct.pack(f"<{n}Q", *[(1 << 32) | r["off"] for r in docs])
        cols += struct.pack(f"<{n}Q", *skeys) + struct.pack(f"<{n}I", *[keys.index(k) for k in skeys])
        terms = {}
        for d, r in enumerate(docs):
            terms.setdefault((1, bytes([r["state"]])), []).append(d)
            terms.setdefault((2, struct.pack("<I", r["spider"])), []).append(d)
            for t in dict.fromkeys(r["tags"]):
                terms.setdefault((3, t.encode()), []).append(d)
            terms.setdefault((4, struct.pack("<q", r["priority"])), []).append(d)
            if r["unique"] is not None and r["state"] < 2:
                terms.setdefault((5, r["unique"].encode()), []).append(d)
        order = sorted(terms)
        dict_off = len(_pad8(b"\0" * 72 + cols))
        blob = b"".join(t for _, t in order)
        post_off = len(_pad8(b"\0" * (dict_off + 16 * len(order)) + blob))
        entries, posts, toff = b"", b"", 0
        for field, term in order:
            entries += struct.pack("<BBHIQ", field, 0, len(term), toff, post_off + len(posts))
            toff += len(term)
            posts += _posting(terms[(field, term)])
        head = struct.pack("<IIII7Q", project, n, len(order), 0, *[72 + 8 * n * i for i in range(6)], dict_off)
        body = _pad8(_pad8(head + cols) + entries + blob) + posts
        sections.append((project, n, body))
    out = bytearray(b"\0" * 64)
    dir_entries = b""
    for project, n, body in sections:
        out += b"\0" * (-len(out) % 8)
        dir_entries += struct.pack("<IIQQII", project, n, len(out), len(body), mcrc(body), 0)
        out += body
    cat = struct.pack("<I", len(names))
    for (p, s), nm in sorted(names.items()):
        cat += struct.pack("<IIIH", p, s, maxjob.get((p, s), 0) + 1 + next_id_bump, len(nm)) + nm
    out += b"\0" * (-len(out) % 8)
    cat_off = len(out)
    out += cat
    out += b"\0" * (-len(out) % 8)
    directory = struct.pack("<II", len(sections), 0) + dir_entries
    dir_off = len(out)
    out += directory
    header = b"JOBQIDX\0" + struct.pack("<II6Q", 1, 0, 1, lo, hi, (1 << 32) | last["end"], (1 << 32) | last["off"],
                                        sum(n for _, n, _ in sections))
    out[0:64] = header
    foot = struct.pack("<4QI", dir_off, len(directory), cat_off, len(cat), 1)
    out += foot + struct.pack("<I", mcrc(header + directory + cat + foot)) + b"JOBQIDX\0"
    path = os.path.join(gen_dir(store), f"idx-{lo:016x}-{hi:016x}.jqi")
    with open(path, "wb") as f:
        f.write(out)
    return path


# --------------------------------------------------------------------------- tests

def test_spec_worked_example(tmp):
    """log.md's worked example, parsed from the spec's hex dump, decodes with every CRC right."""
    with open(SPEC_LOG, encoding="utf-8") as f:
        text = f.read()
    block = text.split("## Worked example", 1)[1].split("```")[1]
    frames = []
    for line in block.splitlines():
        m = re.match(r"^([0-9a-f]{4}): ((?:[0-9a-f]{2} )*[0-9a-f]{2})", line)
        if m:
            if m.group(1) == "0000":
                frames.append(bytearray())
            frames[-1] += bytes.fromhex(m.group(2).replace(" ", ""))
    assert [len(f) for f in frames] == [49, 124], [len(f) for f in frames]
    data = bytes(64) + b"".join(frames)                  # at offset 64, then 113, as the example says
    got = []
    off = 64
    for fb in frames:
        fields, why = reader.decode_frame_header(data, off)
        assert fields is not None, f"worked example frame at {off}: {why}"
        fr = reader.make_frame("log.md", 1, off, fields)
        fr.payload = reader.decode_payload(fr, data)
        got.append(fr)
        off = fr.end
    sp, jobs = got
    assert (sp.kind, sp.first_seq, sp.durable_seq, sp.payload) == (2, 1, 0, (53, 7, "spider1"))
    assert (jobs.kind, jobs.first_seq, jobs.durable_seq, jobs.off) == (1, 2, 0, 113)
    r = jobs.payload[0]
    assert (r.key, r.state, r.mask, r.priority, r.order_seq, r.ts, r.tags, r.unique, r.doc_text) == \
        ((53, 7, 81), 0, 1, 2, 2, 1397762393489, ["a"], None, '{"units":1}'), r.key
    assert struct.unpack_from("<I", data, 113 + 36)[0] == reader.masked_crc(data[113 + 40:113 + 124])
    assert reader.masked_crc(b"") != 0 and zlib.crc32(b"123456789") == 0xCBF43926
    return "spider frame and jobs frame (record CRC 0xad0eba2d) decode"


def test_export_matches(tmp):
    store = fresh_copy(tmp)
    p = run(store, "export")
    assert p.returncode == 0, p.stderr
    with open(EXPORT, encoding="utf-8") as f:
        want = parse_jsonl(f.read())
    got = parse_jsonl(p.stdout)
    assert len(got) == len(want), f"{len(got)} lines exported, {len(want)} expected"
    for i, (g, w) in enumerate(zip(got, want)):
        assert [k for k, _ in g] == [k for k, _ in w], f"line {i + 1}: field order {g} != {w}"
        assert g == w, f"line {i + 1}: {g} != {w}"
        for (k, gv), (_, wv) in zip(g, w):
            assert type(gv) is type(wv), f"line {i + 1} field {k}: {type(gv)} != {type(wv)}"
    with open(EXPORT, encoding="utf-8") as f:
        byte_identical = f.read() == p.stdout
    return f"{len(got)} lines (catalog and jobs) equal field by field (byte-identical: {byte_identical})"


def test_check_passes(tmp):
    store = fresh_copy(tmp)
    p = run(store, "check")
    assert p.returncode == 0, f"check failed: {p.stdout}{p.stderr}"
    assert "check: ok" in p.stdout, p.stdout
    chain = [ln for ln in p.stdout.splitlines() if ln.startswith("chain:")]
    assert len(chain) == len(index_files(STORE)) == 2, f"the fixture's indexes should form a chain: {p.stdout}"
    assert "tail: 1 job(s) after sequence 46" in p.stdout, p.stdout
    return p.stdout.strip().splitlines()[-2]


def index_variants(tmp):
    """The fixture as is (tail: 1 job), without its second index file (the tail of sequences
    31.. supersedes docs of the first), and without index files (everything replayed)."""
    for drop in ((), (1,), (0, 1)):
        store = fresh_copy(tmp)
        files = index_files(store)
        for i in drop:
            os.remove(files[i])
        yield f"indexes dropped {list(drop)}", store


def test_list_consistent(tmp):
    recs = expected_export()
    projects = sorted({dict(r)["project"] for r in recs})
    for variant, store in index_variants(tmp):
        for project in projects:
            if not variant.endswith("[]"):
                rc, out, err = run_in(store, "list", str(project))
                assert rc == 0, err
            else:
                p = run(store, "list", str(project))
                assert p.returncode == 0, p.stderr
                out = p.stdout
            got = out.split()
            want = listing_from_export(recs, project)
            assert sorted(got) == sorted(want), f"{variant}: project {project}: key sets differ: {got} vs {want}"
            assert got == want, f"{variant}: project {project}: order {got} vs {want}"
        rc, out, _ = run_in(store, "list", str(max(projects) + 1000))
        assert rc == 0 and out == "", (rc, out)
        assert export_of(store) == recs, f"{variant}: export differs"
    return f"projects {projects}, 3 index variants"


def test_counts_consistent(tmp):
    recs = [dict(r) for r in expected_export()]
    n = 0
    for variant, store in index_variants(tmp):
        for project in sorted({r["project"] for r in recs}):
            mine = [r for r in recs if r["project"] == project]
            tags = sorted({t for r in mine for t in r["tags"]}) + ["no-such-tag"]
            for state in STATES:
                for tag in [None] + tags:
                    want = sum(1 for r in mine if r["state"] == state and (tag is None or tag in r["tags"]))
                    rc, out, err = run_in(store, "count", str(project), state, *([tag] if tag else []))
                    assert rc == 0, err
                    assert int(out) == want, f"{variant}: count {project} {state} {tag}: {out.strip()} != {want}"
                    n += 1
    assert run(store, "count", "53", "bogus").returncode == 2, "an unknown state is a usage error"
    return f"{n} counts"


def test_mid_log_damage_is_corruption(tmp):
    """durability.md rules 1-2 and media assumption 4: a bad frame that a later frame (durable_seq)
    or an index proves durable is corruption, named by segment file and frame offset; `check`
    validates every frame, `export`/`list` the frames after the index chain."""
    frames = raw_frames(segments(STORE)[-1])
    synced = [f for i, f in enumerate(frames)
              if any(g["durable_seq"] >= f["first_seq"] and g["first_seq"] >= f["first_seq"] for g in frames[i + 1:])]
    assert len(synced) > 10, "fixture has too few frames followed by a frame claiming them durable"
    idx = [os.path.basename(p) for p in index_files(STORE)]
    checked = 0
    for f in synced[::3] + [synced[-1]]:
        mid = (f["off"] + f["end"]) // 2
        for keep in ([], [idx[0]]):           # no index: the open validates the whole log; idx 1: from 31 on
            store = fresh_copy(tmp)
            for name in idx:
                if name not in keep:
                    os.remove(os.path.join(gen_dir(store), name))
            flip(segments(store)[-1], mid)
            if keep and f["last_seq"] <= 30:
                continue
            assert_corruption(store, (["export"], ["check"], ["list", "53"], ["count", "54", "pending"]),
                              segments(store)[-1], f["off"], f"flip at {mid} (frame at {f['off']}), indexes {keep}")
            checked += 1
    # a frame covered by the chain: only `check` validates it; the open does not read it
    f = frames[0]                          # spider frame, sequence 1
    store = fresh_copy(tmp)
    flip(segments(store)[-1], f["off"] + 40)
    assert_corruption(store, (["check"],), segments(store)[-1], f["off"], "flip in frame 1 under the chain")
    assert export_of(store) == expected_export(), "the open re-validated a frame covered by the chain"
    return f"{checked} flips reported at their frame offsets; covered frame 1 reported by check only"


def test_index_proves_durability(tmp):
    """Media assumption 4: a damaged last frame is corruption when an index covers it."""
    frames = raw_frames(segments(STORE)[-1])
    commit = [f for f in frames if f["kind"] == 4][-1]
    gone = {k for f in frames if f["first_seq"] > commit["first_seq"] for k in f["keys"]}
    store = fresh_copy(tmp)
    truncate(segments(store)[-1], commit["end"])          # the log ends with the indexed commit
    assert_export_without(store, gone, "log cut after the commit")
    assert run_in(store, "check")[0] == 0
    flip(segments(store)[-1], commit["off"] + 34)
    assert_corruption(store, (["export"], ["check"]), segments(store)[-1], commit["off"], "flip in indexed commit")
    store = fresh_copy(tmp)
    truncate(segments(store)[-1], commit["off"] + 10)
    assert_corruption(store, (["export"], ["check"]), segments(store)[-1], commit["off"], "indexed commit torn")
    return f"indexed last frame at {commit['off']}: flipped or cut is corruption, not a torn tail"


def test_truncated_last_frame_is_torn_tail(tmp):
    store = fresh_copy(tmp)
    seg = segments(store)[-1]
    frames = raw_frames(seg)
    last = frames[-1]
    assert last["end"] == os.path.getsize(seg), "fixture's last segment has trailing bytes"
    assert last["kind"] == 1, "fixture's last frame is not a jobs frame"
    earlier = {k for f in frames[:-1] for k in f["keys"]}
    assert not set(last["keys"]) & earlier, "the last frame's jobs have earlier versions"
    gone = set(last["keys"])
    results = []
    for cut in (last["end"] - 1, (last["off"] + last["end"]) // 2, last["off"] + 7, last["off"]):
        store = fresh_copy(tmp)
        truncate(segments(store)[-1], cut)
        assert_export_without(store, gone, f"cut at {cut}")
        rc, out, err = run_in(store, "check")
        assert rc == 0, f"cut at {cut}: check failed: {out}{err}"
        if cut != last["off"]:
            assert "torn tail" in out and f"offset {last['off']}:" in out, out
        for project in sorted({int(k.split("/")[0]) for k in gone}):
            rc, out, _ = run_in(store, "list", str(project))
            want = [k for k in listing_from_export(expected_export(), project) if k not in gone]
            assert out.split() == want, f"cut at {cut}: list {project}"
        results.append(cut)
    # a flip in the last frame, which no later frame claims durable, is a torn tail too
    store = fresh_copy(tmp)
    flip(segments(store)[-1], (last["off"] + last["end"]) // 2)
    assert_export_without(store, gone, "flip in the last frame")
    assert run_in(store, "check")[0] == 0
    # and so is one in the frame before it: the last frame's durable_seq is below its sequence
    prev = frames[-2]
    assert last["durable_seq"] < prev["first_seq"], "fixture: the last frame claims the one before durable"
    store = fresh_copy(tmp)
    flip(segments(store)[-1], prev["off"] + 20)
    assert_export_without(store, gone | set(prev["keys"]), "flip in the frame before the last")
    rc, out, _ = run_in(store, "check")
    assert rc == 0 and f"offset {prev['off']}:" in out, out
    return f"cuts at {results}, a flip in either of the last two frames drop exactly {sorted(gone)}"


def test_open_import_transaction_is_cut_back(tmp):
    """durability.md rule 3: an import without its commit at the end is cut back (once no index
    covers the commit)."""
    frames = raw_frames(segments(STORE)[-1])
    ci = max(i for i, f in enumerate(frames) if f["kind"] == 4)
    first = ci
    while first > 0 and frames[first - 1]["flags"] & 1:
        first -= 1
    assert frames[ci]["payload"] == struct.pack("<Q", frames[first]["first_seq"])
    gone = {k for f in frames[first:] for k in f["keys"]}
    assert not gone & {k for f in frames[:first] for k in f["keys"]}
    store = fresh_copy(tmp)
    os.remove(index_files(store)[-1])                   # the index covering the import
    truncate(segments(store)[-1], frames[ci]["off"] + 10)
    assert_export_without(store, gone, "commit torn")
    rc, out, err = run_in(store, "check")
    assert rc == 0 and "transaction cut back" in out and f"offset {frames[first]['off']} " in out, out + err
    return f"torn commit drops the import and what follows: {sorted(gone)}"


def test_index_ends_inside_committed_transaction(tmp):
    """log.md: an index may end inside a committed transaction; the replay after it accepts the
    commit. Also the chain rule (largest hi_seq among files starting at the next sequence)."""
    frames = raw_frames(segments(STORE)[-1])
    ci = max(i for i, f in enumerate(frames) if f["kind"] == 4)
    inner = frames[ci - 1]
    assert inner["flags"] & 1 and inner["kind"] == 1
    store = fresh_copy(tmp)
    os.remove(index_files(store)[-1])
    built = build_index(store, 31, inner["last_seq"])
    rc, out, err = run_in(store, "check")
    assert rc == 0, f"check of an index ending inside the import: {out}{err}"
    assert f"chain: {os.path.basename(built)}" in out, out
    assert export_of(store) == expected_export()
    for project in (53, 54, 60):
        assert run_in(store, "list", str(project))[1].split() == listing_from_export(expected_export(), project)
    # the commit missing although the index proves the transaction was committed: corruption
    truncate(segments(store)[-1], frames[ci]["off"] + 10)
    rc, _, err = run_in(store, "export")
    assert rc == 1 and "inside an import transaction" in err and f"offset {frames[ci]['off']}:" in err, err
    # chain: a merged file 1..46 beside its inputs wins; a file whose last_frame does not match is set aside
    store = fresh_copy(tmp)
    merged = build_index(store, 1, 46)
    rc, out, err = run_in(store, "check")
    assert rc == 0 and out.count("chain:") == 1 and f"chain: {os.path.basename(merged)}" in out, out + err
    assert out.count("index file set aside") == 2, out
    assert export_of(store) == expected_export()
    return f"{os.path.basename(built)} ends at sequence {inner['last_seq']} inside the import; merged 1..46 chosen"


def split_log(store, at_seq):
    """Move the frames after sequence `at_seq` into a new segment 2 (layout.md, log.md)."""
    seg1 = segments(store)[0]
    frames = raw_frames(seg1)
    cut = [f for f in frames if f["last_seq"] == at_seq][0]["end"]
    with open(seg1, "rb") as f:
        data = f.read()
    head = b"JOBQLOG\0" + struct.pack("<IIQQ", 1, 2, 1, at_seq + 1) + bytes(28)
    head += struct.pack("<I", mcrc(head))
    seg2 = os.path.join(gen_dir(store), "log-0000000002.jql")
    with open(seg2, "wb") as f:
        f.write(head + data[cut:])
    truncate(seg1, cut)
    return seg1, seg2, cut


def test_two_segments(tmp):
    """A log of two segments: an index whose log_end is (segment 1, its size) is followed by segment
    2; rule 1 (bad frame in a segment that is not the last); a header-only last segment is empty."""
    frames = raw_frames(segments(STORE)[0])
    store = fresh_copy(tmp)
    for p in index_files(store):
        os.remove(p)
    seg1, seg2, cut = split_log(store, 30)
    built = build_index(store, 1, 30)
    rc, out, err = run_in(store, "check")
    assert rc == 0 and f"chain: {os.path.basename(built)}" in out and "2 segment(s)" in out, out + err
    assert "job(s) after sequence 30; 2 superseded" in out, out
    assert export_of(store) == expected_export()
    for project in (53, 54, 60):
        assert run_in(store, "list", str(project))[1].split() == listing_from_export(expected_export(), project)
    # segment 2's header must continue the sequence
    with open(seg2, "r+b") as f:
        h = bytearray(f.read(64))
        h[24:32] = struct.pack("<Q", 32)
        h[60:64] = struct.pack("<I", mcrc(bytes(h[:60])))
        f.seek(0)
        f.write(h)
    assert_corruption(store, (["export"], ["check"]), seg2, 24, "segment 2 first_seq 32")
    # segment 2 holding only its header: valid and empty; a bad last frame of segment 1 is corruption
    store = fresh_copy(tmp)
    for p in index_files(store):
        os.remove(p)
    seg1, seg2, cut = split_log(store, 30)
    truncate(seg2, 64)
    newest = {}
    for f in frames:
        for r in f["recs"]:
            if r["seq"] <= 30:
                newest[r["key"]] = r
    got = export_of(store)
    assert sorted(key_of(r) for r in got) == sorted(newest), "header-only last segment"
    assert run_in(store, "check")[0] == 0
    last1 = [f for f in frames if f["end"] == cut][0]
    flip(seg1, (last1["off"] + last1["end"]) // 2)
    assert_corruption(store, (["export"], ["check"], ["list", "54"]), seg1, last1["off"], "rule 1")
    # an index whose catalog says a wrong next job id (index.md) fails check, answers unchanged
    store = fresh_copy(tmp)
    os.remove(index_files(store)[1])
    os.remove(index_files(store)[0])
    bad = build_index(store, 1, 30, next_id_bump=1)
    rc, out, _ = run_in(store, "check")
    assert rc == 1 and "DAMAGED" in out and os.path.basename(bad) in out and "catalog" in out, out
    assert export_of(store) == expected_export()
    return f"split after sequence 30 at offset {cut}: chained, rule 1, empty last segment, catalog next id"


def test_record_damage_under_index(tmp):
    """log.md/durability.md: a record read through an index is verified by its own CRC (export
    names the record's file and offset); `list` and `count` read only the index; `check`
    validates the frame; damage to a record nothing reads is found by `check` only."""
    seg0 = segments(STORE)[-1]
    frames = raw_frames(seg0)
    chain_hi = 46
    newest = {}
    for f in frames:
        for r in f["recs"]:
            newest[r["key"]] = r
    live = [r for r in newest.values() if r["seq"] <= chain_hi]
    superseded = [r for f in frames for r in f["recs"] if newest[r["key"]] is not r]
    assert live and superseded
    frame_of = {r["off"]: f for f in frames for r in f["recs"]}
    n = 0
    for r in live[::4] + [live[-1]]:
        for where in (r["off"] + 1, r["off"] + 5, (r["off"] + 8 + r["end"]) // 2):   # body_len, crc, body
            store = fresh_copy(tmp)
            seg = segments(store)[-1]
            flip(seg, where)
            rc, out, err = run_in(store, "export")
            assert rc == 1 and os.path.basename(seg) in err and f"offset {r['off']}:" in err \
                and "corruption" in err, f"flip at {where} in record {r['key']} at {r['off']}: {err}"
            assert_corruption(store, (["check"],), seg, frame_of[r["off"]]["off"], f"record {r['key']}")
            project = r["project"]
            assert run_in(store, "list", str(project))[1].split() == \
                listing_from_export(expected_export(), project), "list read a record"
            assert run_in(store, "count", str(project), STATES[r["state"]])[0] == 0
            n += 1
    for r in superseded:
        store = fresh_copy(tmp)
        flip(segments(store)[-1], (r["off"] + 8 + r["end"]) // 2)
        assert export_of(store) == expected_export(), f"superseded record {r['key']}: export changed"
        assert_corruption(store, (["check"],), segments(store)[-1], frame_of[r["off"]]["off"], "superseded")
        n += 1
    return f"{n} damaged records; live ones named by export at their offsets, all by check"


def test_index_damage_is_set_aside(tmp):
    """index.md: a file that fails a check is not used; the answers come from the log."""
    out = []
    for i in range(len(index_files(STORE))):
        for where in ("middle", "version"):
            store = fresh_copy(tmp)
            ix = index_files(store)[i]
            if where == "middle":
                flip(ix, os.path.getsize(ix) // 2)
            else:                   # version 2 with every CRC right: unknown version, set aside
                with open(ix, "r+b") as f:
                    b = bytearray(f.read())
                    b[8:12] = b[-16:-12] = struct.pack("<I", 2)
                    do, dl, co, cl = struct.unpack_from("<4Q", b, len(b) - 48)
                    fo = len(b) - 48
                    b[fo + 36:fo + 40] = struct.pack("<I", mcrc(bytes(b[:64] + b[do:do + dl] + b[co:co + cl]
                                                                      + b[fo:fo + 36])))
                    f.seek(0)
                    f.write(b)
            rc, o, e = run_in(store, "check")
            assert rc != 0, f"a damaged {ix} ({where}) passed check"
            assert os.path.basename(ix) in o + e
            if where == "version":
                assert "unknown index version 2" in o, o
            assert export_of(store) == expected_export(), "export changed after index damage"
            for project in (53, 54, 60):
                assert run_in(store, "list", str(project))[1].split() == \
                    listing_from_export(expected_export(), project)
            out.append(f"{os.path.basename(ix)}:{where}")
    store = fresh_copy(tmp)
    os.remove(index_files(store)[0])          # a missing index file is no damage: the log covers its range
    assert run_in(store, "check")[0] == 0
    assert export_of(store) == expected_export()
    return f"damaged {out} set aside, answers unchanged"


def test_unknown_versions_refused(tmp):
    """conventions.md: a reader refuses a log or CURRENT version it does not know, naming file and version."""
    done = []
    for name, vo, co, cend in (("CURRENT", 8, 28, 28), ("log-0000000001.jql", 8, 60, 60)):
        store = fresh_copy(tmp)
        path = os.path.join(store, name) if name == "CURRENT" else segments(store)[0]
        with open(path, "r+b") as f:
            b = bytearray(f.read())
            b[vo:vo + 4] = struct.pack("<I", 2)
            b[co:co + 4] = struct.pack("<I", mcrc(bytes(b[:cend])))
            f.seek(0)
            f.write(b)
        for cmd in ("export", "check"):
            rc, _, err = run_in(store, cmd)
            assert rc == 1 and name in err and "version 2" in err, err
        done.append(name)
    return f"version 2 of {done} refused"


def test_bitmap_containers_decode(tmp):
    """The fixture has no bitmap container (no list above 4096 docs): decode one built from
    index.md's layout, at an unaligned offset, next to an array container of the following block."""
    docs = sorted(set(range(0, 65536, 13)) | {1, 2, 3})        # 5044 docs in block 0: bitmap
    high = [65536 + 7, 65536 + 9000]                             # block 1: array
    body = _posting(docs + high)
    buf = reader.Buf(b"\0" * 5 + body, "synthetic", 0)
    p = reader.decode_posting(buf, 5, 80000, "synthetic")
    assert p.docs == docs + high, "bitmap/array containers decoded wrong"
    assert p.end == 5 + len(body)
    bad_cases = {"cardinality": (12, struct.pack("<I", len(docs) + 1)),       # bitmap popcount disagrees
                 "expected": (16, struct.pack("<I", 8 + 24 + 8)),             # data not right after the directory
                 "bitmap container with": (10, struct.pack("<H", 1) + struct.pack("<I", 2)),   # a 2-doc bitmap
                 "not strictly ascending": (8, struct.pack("<H", 1))}         # blocks 1, 1
    for word, (at, patch) in bad_cases.items():
        bad = bytearray(body)
        bad[at:at + len(patch)] = patch
        try:
            reader.decode_posting(reader.Buf(bytes(bad), "synthetic", 0), 0, 80000, "synthetic")
        except reader.Damage as e:
            assert word in str(e), f"{word}: {e}"
        else:
            raise AssertionError(f"a bad posting list ({word}) was accepted")
    return f"{len(docs)}-doc bitmap + array container; {len(bad_cases)} malformed lists refused"


def test_no_traceback_on_bad_bytes(tmp):
    """Flip and cut a sample of bytes of every file: the reader answers or names the damage."""
    store = fresh_copy(tmp)
    files = [os.path.join(store, "CURRENT")] + segments(store) + index_files(store)
    runs = 0
    for path in files:
        with open(path, "rb") as f:
            orig = f.read()
        step = 1 if len(orig) < 64 else 23
        for i in range(0, len(orig), step):
            for mode in ("flip", "cut"):
                with open(path, "wb") as f:
                    f.write(orig[:i] if mode == "cut" else orig[:i] + bytes([orig[i] ^ 0x81]) + orig[i + 1:])
                for cmd in (("export",), ("check",), ("list", "54")):
                    try:
                        rc, _, err = run_in(store, *cmd)
                    except Exception:
                        raise AssertionError(f"{mode} at {os.path.basename(path)}:{i}: {cmd} raised\n"
                                             + traceback.format_exc())
                    assert rc in (0, 1), rc
                    if rc:
                        assert "offset" in err or "cannot" in err or "FAILED" in err, err
                    runs += 1
        with open(path, "wb") as f:
            f.write(orig)
    return f"{runs} damaged reads, no traceback"


def main():
    start = time.monotonic()
    before = fixture_digest()
    tests = [v for k, v in globals().items() if k.startswith("test_") and callable(v)]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="jobq-spec-reader-") as tmp:
        for t in tests:
            try:
                note = t(tmp)
                print(f"ok    {t.__name__}: {note}")
            except AssertionError as e:
                failed += 1
                print(f"FAIL  {t.__name__}: {e}")
            except Exception:
                failed += 1
                print(f"ERROR {t.__name__}:\n{traceback.format_exc()}")
    assert fixture_digest() == before, "the fixture was modified"
    print(f"{len(tests) - failed}/{len(tests)} passed in {time.monotonic() - start:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
