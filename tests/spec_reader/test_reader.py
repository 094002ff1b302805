#!/usr/bin/env python3
"""Checks the spec-only reader (reader.py) against the v1 format fixture.

    python3 tests/spec_reader/test_reader.py

Standard library only, no pytest. The fixture is never modified: every test works on a
copy in a temporary directory, and the fixture's bytes are compared before and after.
"""

import contextlib
import decimal
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "v1")
STORE = os.path.join(FIXTURE, "store")
EXPORT = os.path.join(FIXTURE, "export.jsonl")
READER = os.path.join(HERE, "reader.py")
STATES = ("pending", "running", "finished", "deleted")


# --------------------------------------------------------------------------- helpers

def run(store, *args):
    p = subprocess.run([sys.executable, READER, store, *args], capture_output=True, text=True)
    assert "Traceback" not in p.stderr, f"reader printed a traceback for {args}:\n{p.stderr}"
    return p


def parse_jsonl(text):
    """Lossless: numbers with a fraction are Decimals, big ints stay ints, objects keep field order."""
    return [json.loads(line, parse_float=decimal.Decimal, object_pairs_hook=list)
            for line in text.splitlines() if line.strip()]


def as_dict(obj):
    return dict(obj)


def expected_export():
    with open(EXPORT, encoding="utf-8") as f:
        return parse_jsonl(f.read())


def export_of(store):
    p = run(store, "export")
    assert p.returncode == 0, f"export failed: {p.stderr}"
    return parse_jsonl(p.stdout)


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


def raw_frames(path):
    """A deliberately minimal frame walk (lengths only, no validation), independent of reader.py."""
    with open(path, "rb") as f:
        data = f.read()
    off, out = 64, []
    while off + 32 <= len(data):
        ln, kind, flags, _, count, first_seq, durable = struct.unpack_from("<IBBHIQQ", data, off + 4)
        end = off + 32 + ln
        if end > len(data):
            break
        keys = []
        if kind == 1:
            p = off + 32
            for _ in range(count):
                bl = struct.unpack_from("<I", data, p)[0]
                keys.append("%d/%d/%d" % struct.unpack_from("<III", data, p + 4))
                p += 4 + bl
        out.append({"off": off, "end": end, "kind": kind, "flags": flags, "count": count,
                    "first_seq": first_seq, "durable_seq": durable, "keys": keys})
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
    want = [r for r in expected_export() if as_dict(r)["key"] not in gone_keys]
    got = export_of(store)
    assert got == want, f"{why}: export differs; got keys {[as_dict(r)['key'] for r in got]}"
    assert len(expected_export()) - len(want) == len(gone_keys), f"{why}: {gone_keys} not all in the export"


def listing_from_export(records, project):
    """ts descending, ties by order_seq descending; export is in order_seq order within a project."""
    rows = [(as_dict(r), i) for i, r in enumerate(records) if as_dict(r)["project"] == project]
    rows.sort(key=lambda x: (x[0][x[0]["state"] + "_time"], x[1]), reverse=True)
    return [d["key"] for d, _ in rows]


# --------------------------------------------------------------------------- tests

def test_export_matches(tmp):
    store = fresh_copy(tmp)
    p = run(store, "export")
    assert p.returncode == 0, p.stderr
    got, want = parse_jsonl(p.stdout), expected_export()
    assert len(got) == len(want), f"{len(got)} jobs exported, {len(want)} expected"
    for i, (g, w) in enumerate(zip(got, want)):
        assert [k for k, _ in g] == [k for k, _ in w], f"line {i + 1}: field order {g} != {w}"
        assert g == w, f"line {i + 1}: {g} != {w}"
        for (k, gv), (_, wv) in zip(g, w):
            assert type(gv) is type(wv), f"line {i + 1} field {k}: {type(gv)} != {type(wv)}"
    with open(EXPORT, encoding="utf-8") as f:
        byte_identical = f.read() == p.stdout
    return f"{len(got)} jobs equal field by field (byte-identical: {byte_identical})"


def test_check_passes(tmp):
    store = fresh_copy(tmp)
    p = run(store, "check")
    assert p.returncode == 0, f"check failed: {p.stdout}{p.stderr}"
    assert "check: ok" in p.stdout, p.stdout
    assert "chain:" in p.stdout, "no index file was used: the fixture's indexes should form a chain"
    return p.stdout.strip().splitlines()[-2]


def test_list_consistent(tmp):
    store = fresh_copy(tmp)
    recs = expected_export()
    projects = sorted({as_dict(r)["project"] for r in recs})
    for project in projects:
        p = run(store, "list", str(project))
        assert p.returncode == 0, p.stderr
        got = p.stdout.split()
        want = listing_from_export(recs, project)
        assert sorted(got) == sorted(want), f"project {project}: key sets differ: {got} vs {want}"
        assert got == want, f"project {project}: order {got} vs {want}"
    absent = max(projects) + 1000
    p = run(store, "list", str(absent))
    assert p.returncode == 0 and p.stdout == "", (p.returncode, p.stdout)
    return f"projects {projects}"


def test_counts_consistent(tmp):
    store = fresh_copy(tmp)
    recs = [as_dict(r) for r in expected_export()]
    n = 0
    for project in sorted({r["project"] for r in recs}):
        mine = [r for r in recs if r["project"] == project]
        tags = sorted({t for r in mine for t in r["tags"]})
        for state in STATES:
            want = sum(1 for r in mine if r["state"] == state)
            p = run(store, "count", str(project), state)
            assert p.returncode == 0, p.stderr
            assert int(p.stdout) == want, f"count {project} {state}: {p.stdout.strip()} != {want}"
            n += 1
            for tag in tags:
                want = sum(1 for r in mine if r["state"] == state and tag in r["tags"])
                p = run(store, "count", str(project), state, tag)
                assert p.returncode == 0, p.stderr
                assert int(p.stdout) == want, f"count {project} {state} {tag}: {p.stdout.strip()} != {want}"
                n += 1
    p = run(store, "count", "53", "bogus")
    assert p.returncode == 2, "an unknown state is a usage error"
    return f"{n} counts"


def test_flip_before_synced_frames_is_corruption(tmp):
    """durability.md rule 2: a bad frame followed by a valid frame whose durable_seq covers it."""
    store = fresh_copy(tmp)
    seg = segments(store)[-1]
    frames = raw_frames(seg)
    synced = [f for i, f in enumerate(frames)
              if any(g["durable_seq"] >= f["first_seq"] for g in frames[i + 1:])]
    assert synced, "fixture has no frame followed by a frame claiming it durable"
    picks = {0: synced[0], 1: synced[len(synced) // 2], 2: synced[-1]}
    jobs = [f for f in synced if f["kind"] == 1]
    if jobs:
        picks[3] = jobs[-1]
    checked = []
    for f in picks.values():
        store = fresh_copy(tmp)
        seg = segments(store)[-1]
        mid = (f["off"] + f["end"]) // 2
        flip(seg, mid)
        for cmd in (["export"], ["check"], ["list", "53"]):
            p = run(store, *cmd)
            assert p.returncode != 0, f"flip at {mid} (frame at {f['off']}): {cmd} succeeded"
            msg = p.stderr
            assert os.path.basename(seg) in msg, f"error does not name the segment: {msg}"
            assert f"offset {f['off']}:" in msg, f"error does not name frame offset {f['off']}: {msg}"
            assert "corruption" in msg, msg
        checked.append(f["off"])
    return f"flips in frames at offsets {checked} reported as corruption at those offsets"


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
        seg = segments(store)[-1]
        truncate(seg, cut)
        assert_export_without(store, gone, f"cut at {cut}")
        p = run(store, "check")
        assert p.returncode == 0, f"cut at {cut}: check failed: {p.stdout}{p.stderr}"
        if cut != last["off"]:
            assert "torn tail" in p.stdout and f"offset {last['off']}:" in p.stdout, p.stdout
        for project in sorted({int(k.split("/")[0]) for k in gone}):
            p = run(store, "list", str(project))
            want = [k for k in listing_from_export(expected_export(), project) if k not in gone]
            assert p.stdout.split() == want, f"cut at {cut}: list {project}"
        results.append(cut)
    # a flip in the last frame, which no later frame claims durable, is a torn tail too
    store = fresh_copy(tmp)
    seg = segments(store)[-1]
    flip(seg, (last["off"] + last["end"]) // 2)
    assert_export_without(store, gone, "flip in the last frame")
    assert run(store, "check").returncode == 0
    return f"cuts at {results} and a flip in the last frame drop exactly {sorted(gone)}"


def test_open_import_transaction_is_cut_back(tmp):
    """durability.md rule 3: an import without its commit at the end is cut back."""
    store = fresh_copy(tmp)
    frames = raw_frames(segments(store)[-1])
    commits = [i for i, f in enumerate(frames) if f["kind"] == 4]
    if not commits:
        return "SKIPPED: the fixture has no import transaction"
    ci = commits[-1]
    first = ci
    while first > 0 and frames[first - 1]["flags"] & 1:
        first -= 1
    gone = {k for f in frames[first:] for k in f["keys"]}
    earlier = {k for f in frames[:first] for k in f["keys"]}
    assert not gone & earlier
    store = fresh_copy(tmp)
    seg = segments(store)[-1]
    truncate(seg, frames[ci]["off"] + 10)          # the commit frame torn
    assert_export_without(store, gone, "commit torn")
    p = run(store, "check")
    assert p.returncode == 0 and "transaction cut back" in p.stdout, p.stdout
    return f"torn commit drops the import and what follows: {sorted(gone)}"


def test_index_damage_is_set_aside(tmp):
    """index.md: a file that fails a check is not used; the answers come from the log."""
    out = []
    for i in range(len(index_files(STORE))):
        store = fresh_copy(tmp)
        ix = index_files(store)[i]
        flip(ix, os.path.getsize(ix) // 2)
        p = run(store, "check")
        assert p.returncode != 0, f"a flipped byte in {ix} passed check"
        assert os.path.basename(ix) in p.stdout + p.stderr
        assert export_of(store) == expected_export(), "export changed after index damage"
        for project in (53, 54, 60):
            p = run(store, "list", str(project))
            assert p.stdout.split() == listing_from_export(expected_export(), project)
        out.append(os.path.basename(ix))
    # a deleted index file is no damage: the log covers its range
    store = fresh_copy(tmp)
    os.remove(index_files(store)[0])
    p = run(store, "check")
    assert p.returncode == 0, p.stdout + p.stderr
    assert export_of(store) == expected_export()
    return f"damaged {out} set aside, answers unchanged"


def test_bitmap_containers_decode(tmp):
    """The fixture has no bitmap container (no list above 4096 docs): decode one built from
    index.md's layout, next to an array container of the following block."""
    sys.path.insert(0, HERE)
    import reader
    docs = sorted(set(range(0, 65536, 13)) | {1, 2, 3})        # 5044 docs in block 0: bitmap
    high = [65536 + 7, 65536 + 9000]                             # block 1: array
    words = [0] * 1024
    for d in docs:
        words[(d & 0xFFFF) >> 6] |= 1 << (d & 63)
    c = 2
    head = struct.pack("<II", len(docs) + len(high), c)
    d0 = 8 + 12 * c
    d1 = d0 + 8192
    head += struct.pack("<HHII", 0, 1, len(docs), d0) + struct.pack("<HHII", 1, 0, len(high), d1)
    body = head + struct.pack("<1024Q", *words) + struct.pack(f"<{len(high)}H", *[h & 0xFFFF for h in high])
    buf = reader.Buf(b"\0" * 5 + body, "synthetic", 0)
    p = reader.decode_posting(buf, 5, 80000, "synthetic")
    assert p.docs == docs + high, "bitmap/array containers decoded wrong"
    assert p.end == 5 + len(body)
    bad = bytearray(body)
    bad[12:16] = struct.pack("<I", len(docs) + 1)                # cardinality disagrees with the bitmap
    try:
        reader.decode_posting(reader.Buf(bytes(bad), "synthetic", 0), 0, 70000, "synthetic")
    except reader.Damage as e:
        assert "cardinality" in str(e)
    else:
        raise AssertionError("a bitmap whose popcount disagrees with its cardinality was accepted")
    return f"{len(docs)}-doc bitmap + array container"


def test_no_traceback_on_bad_bytes(tmp):
    """Flip and cut a sample of bytes of every file: the reader answers or names the damage."""
    sys.path.insert(0, HERE)
    import reader
    store = fresh_copy(tmp)
    files = [os.path.join(store, "CURRENT")] + segments(store) + index_files(store)
    runs = 0
    for path in files:
        with open(path, "rb") as f:
            orig = f.read()
        for i in range(0, len(orig), 37):
            for mode in ("flip", "cut"):
                with open(path, "wb") as f:
                    f.write(orig[:i] if mode == "cut" else orig[:i] + bytes([orig[i] ^ 0x81]) + orig[i + 1:])
                for cmd in ("export", "check"):
                    err = io.StringIO()
                    try:
                        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                            rc = reader.main(["reader.py", store, cmd])
                    except Exception:
                        raise AssertionError(f"{mode} at {os.path.basename(path)}:{i}: {cmd} raised\n"
                                             + traceback.format_exc())
                    assert rc in (0, 1), rc
                    if rc:
                        assert "offset" in err.getvalue() or "cannot" in err.getvalue() or \
                            "FAILED" in err.getvalue(), err.getvalue()
                    runs += 1
        with open(path, "wb") as f:
            f.write(orig)
    return f"{runs} damaged reads, no traceback"


def main():
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
    print(f"{len(tests) - failed}/{len(tests)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
