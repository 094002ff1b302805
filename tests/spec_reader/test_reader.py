#!/usr/bin/env python3
"""Checks the spec-only reader (reader.py) against the format fixtures, tests/fixtures/v1 to v9.

    python3 tests/spec_reader/test_reader.py

Standard library only, no pytest. Every test runs against both fixtures unless it is marked
for one format version (or for none: a test that reads no fixture runs once). The fixtures are
never modified: every test works on a copy in a temporary directory, and the fixtures' bytes are
compared before and after. The helpers (fixture_tools.py) are written apart from reader.py.
"""

import json
import os
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zlib

from fixture_tools import (  # noqa: E402
    Fixture, STATES, SLOT_OFF, V2_DATA, _packed, _posting, _posting_v3, assert_corruption, assert_export_without, build_index,
    export_of, flip, fresh_copy, gen_dir, index_files, key_of, listing_from_export, log_frames, mark_of, mcrc,
    parse_jsonl, patch, proved_durable, raw_frames, reader, remove_indexes, run, run_in, segments, set_header_field,
    set_mark, spec_hex_blocks, split_log, truncate, versions)
import test_cluster  # noqa: E402
import test_log_start  # noqa: E402
import test_marks  # noqa: E402
import test_packed  # noqa: E402

FIXTURES = [Fixture(1), Fixture(2), Fixture(3), Fixture(4), Fixture(5), Fixture(6)]


# --------------------------------------------------------------------------- tests

@versions()
def test_spec_worked_example(tmp, fx):
    """log.md's worked example, parsed from the spec's hex dump, decodes with every CRC right."""
    frames = spec_hex_blocks()[0]
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


def test_export_matches(tmp, fx):
    store = fresh_copy(tmp, fx)
    p = run(store, "export")
    assert p.returncode == 0, p.stderr
    got, want = parse_jsonl(p.stdout), parse_jsonl(fx.export_text)
    assert len(got) == len(want), f"{len(got)} lines exported, {len(want)} expected"
    for i, (g, w) in enumerate(zip(got, want)):
        assert [k for k, _ in g] == [k for k, _ in w], f"line {i + 1}: field order {g} != {w}"
        assert g == w, f"line {i + 1}: {g} != {w}"
        for (k, gv), (_, wv) in zip(g, w):
            assert type(gv) is type(wv), f"line {i + 1} field {k}: {type(gv)} != {type(wv)}"
    byte_identical = fx.export_text == p.stdout
    return f"{len(got)} lines (catalog and jobs) equal field by field (byte-identical: {byte_identical})"


def test_check_passes(tmp, fx):
    store = fresh_copy(tmp, fx)
    p = run(store, "check")
    assert p.returncode == 0, f"check failed: {p.stdout}{p.stderr}"
    assert "check: ok" in p.stdout, p.stdout
    chain = [ln for ln in p.stdout.splitlines() if ln.startswith("chain:")]
    assert len(chain) == len(index_files(fx.store)) == 2, f"the fixture's indexes should form a chain: {p.stdout}"
    assert "tail: 1 job(s) after sequence 46" in p.stdout, p.stdout
    return p.stdout.strip().splitlines()[-2]


def index_variants(tmp, fx):
    """The fixture as is (tail: 1 job), without its second index file (the tail of sequences
    31.. supersedes docs of the first), and without index files (everything replayed)."""
    for drop in ((), (1,), (0, 1)):
        store = fresh_copy(tmp, fx)
        files = index_files(store)
        for i in drop:
            os.remove(files[i])
        yield f"indexes dropped {list(drop)}", store


def test_list_consistent(tmp, fx):
    recs = fx.export()
    projects = sorted({dict(r)["project"] for r in recs})
    for variant, store in index_variants(tmp, fx):
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


def test_counts_consistent(tmp, fx):
    recs = [dict(r) for r in fx.export()]
    n = 0
    for variant, store in index_variants(tmp, fx):
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


def import_frames(frames):
    """(first transaction frame, commit frame) of the last import in `frames`."""
    ci = max(i for i, f in enumerate(frames) if f["kind"] == 4)
    first = ci
    while first > 0 and frames[first - 1]["flags"] & 1:
        first -= 1
    assert frames[ci]["payload"] == struct.pack("<Q", frames[first]["first_seq"])
    return first, ci


def lower_mark(fx, seg, frame, why):
    """Version 2: put the last segment's durable mark at `frame` (a frame dict), as a crash before
    the sync that would have covered it leaves it (the mark lags by one fdatasync). Version 1: none."""
    if fx.version >= 2:
        set_mark(seg, frame["off"], frame["first_seq"])
        assert mark_of(seg) == (frame["off"], frame["first_seq"]), why


def test_mid_log_damage_is_corruption(tmp, fx):
    """durability.md rules 1-2 and media assumption 4: a bad frame in a segment before the last, or
    in the last one that a later frame (version 1: durable_seq) or the durable mark (version 2) or
    an index proves durable, is corruption, named by segment file and frame offset; `check`
    validates every frame, `export`/`list` the frames after the index chain."""
    synced = proved_durable(fx.store)
    assert len(synced) > 10, "fixture has too few frames proved durable"
    idx = [os.path.basename(p) for p in index_files(fx.store)]
    checked = 0
    for f in synced[::3] + [synced[-1]]:
        mid = (f["off"] + f["end"]) // 2
        for keep in ([], [idx[0]]):           # no index: the open validates the whole log; idx 1: from 31 on
            if keep and f["last_seq"] <= 30:
                continue
            store = fresh_copy(tmp, fx)
            for name in idx:
                if name not in keep:
                    os.remove(os.path.join(gen_dir(store), name))
            seg = os.path.join(gen_dir(store), os.path.basename(f["path"]))
            flip(seg, mid)
            assert_corruption(store, (["export"], ["check"], ["list", "53"], ["count", "54", "pending"]),
                              seg, f["off"], f"flip at {mid} (frame at {f['off']}), indexes {keep}")
            checked += 1
    # a frame covered by the chain: only `check` validates it; the open does not read it
    f = log_frames(fx.store)[0]                          # spider frame, sequence 1
    store = fresh_copy(tmp, fx)
    flip(segments(store)[0], f["off"] + 40)
    assert_corruption(store, (["check"],), segments(store)[0], f["off"], "flip in frame 1 under the chain")
    assert export_of(store) == fx.export(), "the open re-validated a frame covered by the chain"
    return f"{checked} flips reported at their frame offsets; covered frame 1 reported by check only"


def test_index_proves_durability(tmp, fx):
    """Media assumption 4: a damaged last frame is corruption when an index covers it (version 2:
    with the mark below it, as a crash can leave it, so that the index alone decides)."""
    frames = raw_frames(segments(fx.store)[-1])
    first, ci = import_frames(frames)
    commit = frames[ci]
    gone = {k for f in frames if f["first_seq"] > commit["first_seq"] for k in f["keys"]}
    store = fresh_copy(tmp, fx)
    seg = segments(store)[-1]
    truncate(seg, commit["end"])                          # the log ends with the indexed commit
    lower_mark(fx, seg, frames[first], "mark at the import's first frame")
    assert_export_without(fx, store, gone, "log cut after the commit")
    assert run_in(store, "check")[0] == 0
    flip(seg, commit["off"] + 34)
    assert_corruption(store, (["export"], ["check"]), seg, commit["off"], "flip in indexed commit")
    assert "idx-" in run_in(store, "export")[2], "not refused because of the index"
    store = fresh_copy(tmp, fx)
    seg = segments(store)[-1]
    truncate(seg, commit["off"] + 10)
    lower_mark(fx, seg, frames[first], "mark at the import's first frame")
    assert_corruption(store, (["export"], ["check"]), seg, commit["off"], "indexed commit torn")
    return f"indexed last frame at {commit['off']}: flipped or cut is corruption, not a torn tail"


def test_truncated_last_frame_is_torn_tail(tmp, fx):
    store = fresh_copy(tmp, fx)
    seg = segments(store)[-1]
    frames = raw_frames(seg)
    last = frames[-1]
    with open(seg, "rb") as f:
        trailing = f.read()[last["end"]:]
    assert not trailing.strip(b"\0"), "fixture's last segment has trailing bytes (other than v5's and v6's zeros)"
    assert last["kind"] == 1, "fixture's last frame is not a jobs frame"
    earlier = {k for f in log_frames(fx.store)[:-1] for k in f["keys"]}
    assert not set(last["keys"]) & earlier, "the last frame's jobs have earlier versions"
    gone = set(last["keys"])
    results = []
    for cut in (last["end"] - 1, (last["off"] + last["end"]) // 2, last["off"] + 7, last["off"]):
        store = fresh_copy(tmp, fx)
        truncate(segments(store)[-1], cut)
        assert_export_without(fx, store, gone, f"cut at {cut}")
        rc, out, err = run_in(store, "check")
        assert rc == 0, f"cut at {cut}: check failed: {out}{err}"
        if cut != last["off"]:
            assert "torn tail" in out and f"offset {last['off']}:" in out, out
        for project in sorted({int(k.split("/")[0]) for k in gone}):
            rc, out, _ = run_in(store, "list", str(project))
            want = [k for k in listing_from_export(fx.export(), project) if k not in gone]
            assert out.split() == want, f"cut at {cut}: list {project}"
        results.append(cut)
    # a flip in the last frame, which nothing proves durable, is a torn tail too
    store = fresh_copy(tmp, fx)
    flip(segments(store)[-1], (last["off"] + last["end"]) // 2)
    assert_export_without(fx, store, gone, "flip in the last frame")
    assert run_in(store, "check")[0] == 0
    # and so is one in the frame before it: version 1, the last frame's durable_seq is below its
    # sequence; version 2, it starts at the mark's durable_end
    prev = frames[-2]
    if fx.log_version == 1:
        assert last["durable_seq"] < prev["first_seq"], "fixture: the last frame claims the one before durable"
    else:
        assert mark_of(seg)[0] == prev["off"], "fixture: the mark is not at the frame before the last"
    store = fresh_copy(tmp, fx)
    flip(segments(store)[-1], prev["off"] + 20)
    assert_export_without(fx, store, gone | set(prev["keys"]), "flip in the frame before the last")
    rc, out, _ = run_in(store, "check")
    assert rc == 0 and f"offset {prev['off']}:" in out, out
    return f"cuts at {results}, a flip in either of the last two frames drop exactly {sorted(gone)}"


def test_open_import_transaction_is_cut_back(tmp, fx):
    """durability.md rule 3: an import without its commit at the end is cut back (once no index
    covers the commit; version 2: the mark where a crash before the import's sync leaves it)."""
    frames = raw_frames(segments(fx.store)[-1])
    first, ci = import_frames(frames)
    gone = {k for f in frames[first:] for k in f["keys"]}
    assert not gone & {k for f in log_frames(fx.store) if f["first_seq"] < frames[first]["first_seq"]
                       for k in f["keys"]}
    store = fresh_copy(tmp, fx)
    os.remove(index_files(store)[-1])                   # the index covering the import
    seg = segments(store)[-1]
    truncate(seg, frames[ci]["off"] + 10)
    lower_mark(fx, seg, frames[first], "mark before the import")
    assert_export_without(fx, store, gone, "commit torn")
    rc, out, err = run_in(store, "check")
    assert rc == 0 and "transaction cut back" in out and f"offset {frames[first]['off']} " in out, out + err
    return f"torn commit drops the import and what follows: {sorted(gone)}"


def test_index_ends_inside_committed_transaction(tmp, fx):
    """log.md: an index may end inside a committed transaction; the replay after it accepts the
    commit. Also the chain rule (largest hi_seq among files starting at the next sequence)."""
    frames = raw_frames(segments(fx.store)[-1])
    _, ci = import_frames(frames)
    inner = frames[ci - 1]
    assert inner["flags"] & 1 and inner["kind"] == 1
    store = fresh_copy(tmp, fx)
    os.remove(index_files(store)[-1])
    built = build_index(store, 31, inner["last_seq"], version=fx.index_version)
    rc, out, err = run_in(store, "check")
    assert rc == 0, f"check of an index ending inside the import: {out}{err}"
    assert f"chain: {os.path.basename(built)}" in out, out
    assert export_of(store) == fx.export()
    for project in (53, 54, 60):
        assert run_in(store, "list", str(project))[1].split() == listing_from_export(fx.export(), project)
    # the commit missing although the index proves the transaction was committed: corruption
    # (version 2: with the mark at the commit, so that its absence alone is not the refusal)
    seg = segments(store)[-1]
    truncate(seg, frames[ci]["off"] + 10)
    lower_mark(fx, seg, frames[ci], "mark at the commit")
    rc, _, err = run_in(store, "export")
    assert rc == 1 and "inside an import transaction" in err and f"offset {frames[ci]['off']}:" in err, err
    # chain: a merged file 1..46 beside its inputs wins; a file whose last_frame does not match is set aside
    store = fresh_copy(tmp, fx)
    merged = build_index(store, 1, 46, version=fx.index_version)
    rc, out, err = run_in(store, "check")
    assert rc == 0 and out.count("chain:") == 1 and f"chain: {os.path.basename(merged)}" in out, out + err
    assert out.count("index file set aside") == 2, out
    assert export_of(store) == fx.export()
    return f"{os.path.basename(built)} ends at sequence {inner['last_seq']} inside the import; merged 1..46 chosen"


# The v3 and v4 fixtures' imports start a segment of their own (as imports do since format 2's
# fixture was written): their last segment starts after sequence 30, with one mark.
@versions(1, 2)
def test_two_segments(tmp, fx):
    """A log split once more (version 1: into two segments; version 2: three): an index whose
    log_end is the end of its segment is followed by the next segment; rule 1 (bad frame in a
    segment that is not the last); a last segment holding only its header (and mark pages) is empty."""
    frames = log_frames(fx.store)
    nsegs = len(segments(fx.store)) + 1
    store = fresh_copy(tmp, fx)
    remove_indexes(store)
    old, new, cut = split_log(store, 30)
    built = build_index(store, 1, 30, version=fx.index_version)
    rc, out, err = run_in(store, "check")
    assert rc == 0 and f"chain: {os.path.basename(built)}" in out and f"{nsegs} segment(s)" in out, out + err
    assert "job(s) after sequence 30; 2 superseded" in out, out
    assert export_of(store) == fx.export()
    for project in (53, 54, 60):
        assert run_in(store, "list", str(project))[1].split() == listing_from_export(fx.export(), project)
    # the new segment's header must continue the sequence
    set_header_field(new, 24, "<Q", 32)
    assert_corruption(store, (["export"], ["check"]), new, 24, "new segment's first_seq 32")
    # the new segment holding only its header: valid and empty (version 2: its mark, as a clean
    # close of an empty segment leaves it, at 12288 naming the header's first sequence)
    store = fresh_copy(tmp, fx)
    remove_indexes(store)
    old, new, cut = split_log(store, 30)
    truncate(new, 64 if fx.version == 1 else V2_DATA)
    if fx.version >= 2:
        set_mark(new, V2_DATA, 31)
    newest = {}
    for f in frames:
        for r in f["recs"]:
            if r["seq"] <= 30:
                newest[r["key"]] = r
    got = export_of(store)
    assert sorted(key_of(r) for r in got) == sorted(newest), "header-only last segment"
    assert run_in(store, "check")[0] == 0
    # a bad last frame of the segment before it is corruption (rule 1)
    last1 = [f for f in raw_frames(old) if f["end"] == cut][0]
    flip(old, (last1["off"] + last1["end"]) // 2)
    assert_corruption(store, (["export"], ["check"], ["list", "54"]), old, last1["off"], "rule 1")
    # an index whose catalog says a wrong next job id (index.md) fails check, answers unchanged
    store = fresh_copy(tmp, fx)
    remove_indexes(store)
    bad = build_index(store, 1, 30, next_id_bump=1, version=fx.index_version)
    rc, out, _ = run_in(store, "check")
    assert rc == 1 and "DAMAGED" in out and os.path.basename(bad) in out and "catalog" in out, out
    assert export_of(store) == fx.export()
    return f"split after sequence 30 at offset {cut}: chained, rule 1, empty last segment, catalog next id"


def test_record_damage_under_index(tmp, fx):
    """log.md/durability.md: a record read through an index is verified by its own CRC (export
    names the record's file and offset); `list` and `count` read only the index; `check`
    validates the frame; damage to a record nothing reads is found by `check` only."""
    frames = log_frames(fx.store)
    chain_hi = 46
    newest = {}
    for f in frames:
        for r in f["recs"]:
            newest[r["key"]] = r
    live = [r for r in newest.values() if r["seq"] <= chain_hi]
    superseded = [r for f in frames for r in f["recs"] if newest[r["key"]] is not r]
    assert live and superseded
    frame_of = {(r["seg"], r["off"]): f for f in frames for r in f["recs"]}
    n = 0
    for r in live[::4] + [live[-1]]:
        for where in (r["off"] + 1, r["off"] + 5, (r["off"] + 8 + r["end"]) // 2):   # body_len, crc, body
            store = fresh_copy(tmp, fx)
            seg = os.path.join(gen_dir(store), os.path.basename(r["path"]))
            flip(seg, where)
            rc, out, err = run_in(store, "export")
            assert rc == 1 and os.path.basename(seg) in err and f"offset {r['off']}:" in err \
                and "corruption" in err, f"flip at {where} in record {r['key']} at {r['off']}: {err}"
            assert_corruption(store, (["check"],), seg, frame_of[(r["seg"], r["off"])]["off"], f"record {r['key']}")
            project = r["project"]
            assert run_in(store, "list", str(project))[1].split() == \
                listing_from_export(fx.export(), project), "list read a record"
            assert run_in(store, "count", str(project), STATES[r["state"]])[0] == 0
            n += 1
    for r in superseded:
        store = fresh_copy(tmp, fx)
        seg = os.path.join(gen_dir(store), os.path.basename(r["path"]))
        flip(seg, (r["off"] + 8 + r["end"]) // 2)
        assert export_of(store) == fx.export(), f"superseded record {r['key']}: export changed"
        assert_corruption(store, (["check"],), seg, frame_of[(r["seg"], r["off"])]["off"], "superseded")
        n += 1
    return f"{n} damaged records; live ones named by export at their offsets, all by check"


def test_index_damage_is_set_aside(tmp, fx):
    """index.md: a file that fails a check is not used; the answers come from the log."""
    out = []
    for i in range(len(index_files(fx.store))):
        for where in ("middle", "version"):
            store = fresh_copy(tmp, fx)
            ix = index_files(store)[i]
            if where == "middle":
                flip(ix, os.path.getsize(ix) // 2)
            else:                   # version 5 with every CRC right: unknown version, set aside
                with open(ix, "r+b") as f:
                    b = bytearray(f.read())
                    b[8:12] = b[-16:-12] = struct.pack("<I", 5)
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
                assert "unknown index version 5" in o, o
            assert export_of(store) == fx.export(), "export changed after index damage"
            for project in (53, 54, 60):
                assert run_in(store, "list", str(project))[1].split() == \
                    listing_from_export(fx.export(), project)
            out.append(f"{os.path.basename(ix)}:{where}")
    store = fresh_copy(tmp, fx)
    os.remove(index_files(store)[0])          # a missing index file is no damage: the log covers its range
    assert run_in(store, "check")[0] == 0
    assert export_of(store) == fx.export()
    return f"damaged {out} set aside, answers unchanged"


def test_unknown_current_version_refused(tmp, fx):
    """conventions.md: a reader refuses a CURRENT version it does not know, naming file and version
    (log segments: test_marks.test_version_7_segment_refused; index files are set aside instead)."""
    store = fresh_copy(tmp, fx)
    path = os.path.join(store, "CURRENT")
    with open(path, "r+b") as f:
        b = bytearray(f.read())
        b[8:12] = struct.pack("<I", 3)
        b[28:32] = struct.pack("<I", mcrc(bytes(b[:28])))
        f.seek(0)
        f.write(b)
    for cmd in ("export", "check"):
        rc, _, err = run_in(store, cmd)
        assert rc == 1 and "CURRENT" in err and "version 3" in err, err
    return "CURRENT version 3 refused"


@versions(2)
def test_current_version_2_names_the_log_start(tmp, fx):
    """layout.md, "CURRENT": version 2 holds the log's first segment at offset 24; a log whose
    first segment is not there is damage (it was removed, not reclaimed), named by segment."""
    store = fresh_copy(tmp, fx)
    path = os.path.join(store, "CURRENT")
    with open(path, "r+b") as f:
        b = bytearray(f.read())
        b[8:12] = struct.pack("<I", 2)
        b[24:28] = struct.pack("<I", 1)
        b[28:32] = struct.pack("<I", mcrc(bytes(b[:28])))
        f.seek(0)
        f.write(b)
    assert export_of(store) == fx.export()
    os.remove(segments(store)[0])
    rc, _, err = run_in(store, "export")
    assert rc == 1 and "log-0000000001.jql" in err and "missing" in err, err
    return "version 2 read; a removed first segment refused"


def test_close_reason_counts(tmp, fx):
    """index.md field 6: the close_reason lists (version-2 files; version-1 files have none and are
    set aside, their range replayed) count what the export says, a string's text or another value's
    JSON text, whatever the state."""
    recs = [dict(r) for r in fx.export()]
    reasons = {}
    for r in recs:
        v = r.get("close_reason")
        if v is not None:
            term = v if isinstance(v, str) else json.dumps(v)
            reasons.setdefault((r["project"], term), 0)
            reasons[(r["project"], term)] += 1
    assert len({t for _, t in reasons}) >= (4 if fx.version >= 4 else 1), reasons
    store = fresh_copy(tmp, fx, "as-is")
    for variant, st in [("as is", store)] + list(index_variants(tmp, fx))[1:]:
        for (project, term), want in sorted(reasons.items()) + [((53, "no-such-reason"), 0)]:
            rc, out, err = run_in(st, "count-reason", str(project), term)
            assert rc == 0, err
            assert int(out) == want, f"{variant}: count-reason {project} {term!r}: {out.strip()} != {want}"
    chain = reader.Store(store, 2).chain
    assert len(chain) == (2 if fx.index_version >= 2 else 0), [ix.fname() for ix in chain]
    return f"{len(reasons)} (project, close_reason) pairs; chain of {len(chain)} version-2+ file(s)"


@versions(4)
def test_index_versions_1_and_2(tmp, fx):
    """index.md "Version 1": a version-1 file of the same range holds nothing wrong (check passes,
    export and counts the same) but no close_reason lists; header and footer versions must agree."""
    store = fresh_copy(tmp, fx)
    os.remove(index_files(store)[0])
    v1 = build_index(store, 1, 30, version=1)
    rc, out, err = run_in(store, "check")
    assert rc == 0 and f"chain: {os.path.basename(v1)}" in out, out + err
    assert export_of(store) == fx.export()
    st = reader.Store(store, 2)
    assert [ix.fname() for ix in st.chain] == [], "a version-1 file first in the chain: none usable"
    assert "no close_reason" in st.indexes[0].stale, st.indexes[0].stale
    for ix in index_files(store):
        damaged = os.path.join(tmp, "damaged")
        shutil.rmtree(damaged, ignore_errors=True)
        shutil.copytree(store, damaged)
        path = os.path.join(gen_dir(damaged), os.path.basename(ix))
        patch(path, 8, struct.pack("<I", 1 if ix != v1 else 2))
        rc, out, err = run_in(damaged, "check")
        assert rc == 1 and "footer version" in out and "the header says" in out, out + err
    return "a version-1 file serves everything but close_reason; mixed header/footer versions are damage"


def test_prev_names_the_previous_version(tmp, fx):
    """log.md, job record byte 15: 0 (not recorded) in versions 1 and 2; in version 3, 1 for the
    version that created its job, else 2 + the state of the key's record just before it."""
    recs = [r for f in log_frames(fx.store) if f["kind"] == 1 for r in f["recs"]]
    if fx.version < 3:
        assert all(r["prev"] == 0 for r in recs), "a record of format 1 or 2 names a previous state"
        return f"{len(recs)} records, prev 0"
    last = {}
    for r in recs:
        want = 1 if r["key"] not in last else 2 + last[r["key"]]
        assert r["prev"] == want, f"record {r['key']} at seq {r['seq']}: prev {r['prev']}, expected {want}"
        last[r["key"]] = r["state"]
    created = sum(r["prev"] == 1 for r in recs)
    return f"{len(recs)} records, {created} creating their job, the rest naming the state before"


@versions(3)
def test_unknown_prev_is_corruption(tmp, fx):
    """log.md: a previous-state byte above 6 is damage, even with every checksum right."""
    store = fresh_copy(tmp, fx)
    seg = segments(store)[0]
    f = [f for f in raw_frames(seg) if f["kind"] == 1][0]
    r = f["recs"][0]
    with open(seg, "rb") as fh:
        data = bytearray(fh.read())
    data[r["off"] + 8 + 15] = 7
    data[r["off"] + 4:r["off"] + 8] = struct.pack("<I", mcrc(bytes(data[r["off"] + 8:r["end"]])))
    data[f["off"]:f["off"] + 4] = struct.pack("<I", mcrc(bytes(data[f["off"] + 4:f["end"]])))
    with open(seg, "wb") as fh:
        fh.write(bytes(data))
    rc, _, err = run_in(store, "check")
    assert rc == 1 and "previous state 7" in err and os.path.basename(seg) in err and "corruption" in err, err
    return f"prev 7 at {os.path.basename(seg)}:{r['off'] + 23} refused"


@versions()
def test_bitmap_containers_decode(tmp, fx):
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


def damage_positions(data):
    """Where test_no_traceback_on_bad_bytes damages a file: every byte of a small file; else the
    header densely, a version-2 segment's pad and mark slots, and about 32 offsets of the rest."""
    n = len(data)
    if n <= 64:
        return list(range(n))
    pos = set(range(0, 64, 4)) | {n - 1}
    start = 64
    if data[:8] == b"JOBQLOG\0" and data[8:12] == struct.pack("<I", 2) and n >= V2_DATA:
        start = V2_DATA
        pos |= {64, 2048, 4095, V2_DATA - 1}
        for so in SLOT_OFF:
            pos |= set(range(so, so + 56, 4)) | {so + 56, so + 1000}
    pos |= set(range(start, n, max(1, (n - start) // 32)))
    return sorted(pos)


def test_no_traceback_on_bad_bytes(tmp, fx):
    """Flip and cut a sample of bytes of every file: the reader answers or names the damage."""
    store = fresh_copy(tmp, fx)
    files = [os.path.join(store, "CURRENT")] + segments(store) + index_files(store)
    runs = 0
    for path in files:
        with open(path, "rb") as f:
            orig = f.read()
        cmds = [("export",), ("check",)] + ([("list", "54")] if path.endswith(".jqi") else [])
        for i in damage_positions(orig):
            for mode in ("flip", "cut"):
                with open(path, "wb") as f:
                    f.write(orig[:i] if mode == "cut" else orig[:i] + bytes([orig[i] ^ 0x81]) + orig[i + 1:])
                for cmd in cmds[1:] if mode == "cut" else cmds:
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


@versions()
def test_packed_columns_and_v3_postings_decode(tmp, fx):
    """index.md "Packed column" and version-3 "Posting list": columns of flat and sloped blocks
    (a negative slope, wrapping past 2^64, width 0 and 64), flat lists, cut bitmaps; a width above
    64, a block whose data runs past the section and non-back-to-back data are refused."""
    vals = [5] * 130 + [2**64 - 1, 0, 2**63] + list(range(1000))
    body = _packed(vals)
    buf = reader.Buf(b"\0" * 3 + body, "synthetic", 0)
    got, end = reader.decode_packed(buf, 3, len(vals), "synthetic")
    assert got == vals and end == 3 + len(body), "flat blocks decoded wrong"
    # one sloped block: value j = base + floor(slope * j / 2^32) + residual_j (mod 2^64)
    base, slope = 2**64 - 10, -3 * 2**32 - 2**31                      # -3.5 a value, wrapping below 0
    res = [j % 4 for j in range(128)]
    want = [(base + ((slope * j) >> 32) + res[j]) % 2**64 for j in range(128)]
    bits = sum(r << (2 * j) for j, r in enumerate(res))
    sloped = struct.pack("<QqIB3x", base, slope, 24, 2) + bits.to_bytes(32, "little")
    assert reader.decode_packed(reader.Buf(sloped, "synthetic", 0), 0, 128, "synthetic")[0] == want
    for what, at, patch in (("width 65", 20, b"\x41"), ("data at", 16, struct.pack("<I", 25)),
                            ("needs", None, None)):
        bad = bytearray(sloped if at is not None else sloped[:-1])
        if at is not None:
            bad[at:at + len(patch)] = patch
        try:
            reader.decode_packed(reader.Buf(bytes(bad), "synthetic", 0), 0, 128, "synthetic")
        except reader.Damage as e:
            assert what in str(e), f"{what}: {e}"
        else:
            raise AssertionError(f"a bad packed column ({what}) was accepted")
    for docs in ([7], [1, 2, 3, 4, 5, 6, 7, 9], list(range(0, 600, 2)), list(range(50)) + [70000, 70001]):
        b = _posting_v3(docs)
        p = reader.decode_posting(reader.Buf(b, "synthetic", 0), 0, 80000, "synthetic", 3)
        assert p.docs == docs and p.end == len(b), docs
    assert len(_posting_v3([7])) == 8 and len(_posting_v3(list(range(0, 600, 2)))) == 8 + 12 + 10 * 8
    return f"{len(vals)} values in flat blocks, one sloped block; 3 bad columns refused; 4 version-3 lists"


def main():
    start = time.monotonic()
    before = [fx.digest() for fx in FIXTURES]
    tests = [v for k, v in list(globals().items()) + list(vars(test_marks).items()) + list(vars(test_packed).items())
             + list(vars(test_cluster).items()) + list(vars(test_log_start).items())
             if k.startswith("test_") and callable(v)]
    runs = []
    for t in tests:
        wanted = getattr(t, "versions", None)
        if wanted == ():
            runs.append((t, None))
        else:
            runs.extend((t, fx) for fx in FIXTURES if wanted is None or fx.version in wanted)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="jobq-spec-reader-") as tmp:
        for t, fx in runs:
            name = f"{t.__name__}" + (f" [v{fx.version}]" if fx else "")
            try:
                note = t(tmp, fx)
                print(f"ok    {name}: {note}")
            except AssertionError as e:
                failed += 1
                print(f"FAIL  {name}: {e}")
            except Exception:
                failed += 1
                print(f"ERROR {name}:\n{traceback.format_exc()}")
    assert [fx.digest() for fx in FIXTURES] == before, "a fixture was modified"
    print(f"{len(runs) - failed}/{len(runs)} passed in {time.monotonic() - start:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
