"""Tests of the version-2 durable marks (log.md "Durable marks", durability.md recovery rule 2) and
of the refined version-1 rule, one corruption case per test in the spirit of LevelDB's log_format
tests. Run by test_reader.py (`cargo test --test spec_reader`). Every test works on a copy."""

import os
import re
import struct

from fixture_tools import (
    SLOT_OFF, V2_DATA, assert_corruption, assert_export_without, build_index, export_of, flip, frame_bytes,
    fresh_copy, index_files, key_of, log_frames, mark_of, mcrc, new_segment, patch, raw_frames,
    read_slots, remove_indexes, run_in, seg_header, segments, set_header_field, set_mark, slot_bytes, spec_hex_blocks,
    split_log, truncate, versions, SPEC_LOG)


def last_segment(store):
    seg = segments(store)[-1]
    return seg, raw_frames(seg)


def describe_mark(store):
    rc, out, err = run_in(store, "check")
    line = [ln for ln in out.splitlines() if ln.startswith("durable mark of")]
    assert line, f"check names no durable mark: {out}{err}"
    return rc, line[0], out


def keys_from(frames):
    return {k for f in frames for k in f["keys"]}


def assert_torn_at(fx, store, off, gone, why):
    """The open ignores a torn tail at `off` (a writer would cut it): the export is the prefix."""
    assert_export_without(fx, store, gone, why)
    rc, out, err = run_in(store, "check")
    assert rc == 0 and "torn tail" in out and f"offset {off}:" in out, f"{why}: {out}{err}"


def newest_slot_damages(number, generation, slot):
    """(name, bytes to write at the slot) for damage that leaves a slot not valid (log.md): a flipped
    byte, zeros, a torn write of a newer mark, and checksummed slots with a wrong field; the last
    two break what the spec states of a written slot without listing it among the validity rules
    (epoch e sits in slot e mod 2; durable_end >= 12288), which this reader also requires."""
    epoch, end, nxt = slot
    good = slot_bytes(number, generation, epoch, end, nxt)

    def resum(b):
        b = bytearray(b)
        b[52:56] = struct.pack("<I", mcrc(bytes(b[:52])))
        return bytes(b)

    flipped = bytearray(good)
    flipped[33] ^= 0x40
    torn = slot_bytes(number, generation, epoch + 2, end + 100, nxt + 1)[:36] + good[36:]   # epoch and half the end
    reserved = bytearray(good)
    reserved[12] = 1
    epoch0 = bytearray(good)
    epoch0[24:32] = bytes(8)
    magic = bytearray(good)
    magic[3] = ord("X")
    return [("flipped byte", bytes(flipped)), ("zeros", bytes(56)), ("torn newer mark", torn),
            ("wrong segment number", slot_bytes(number + 1, generation, epoch, end, nxt)),
            ("wrong generation", slot_bytes(number, generation + 1, epoch, end, nxt)),
            ("reserved byte", resum(reserved)), ("epoch 0", resum(epoch0)), ("bad magic", resum(magic)),
            ("newer epoch of the other slot", slot_bytes(number, generation, epoch + 1, end, nxt)),
            ("durable_end below 12288", slot_bytes(number, generation, epoch, SLOT_OFF[1], nxt))]


@versions(2, 3)
def test_torn_tail_after_mark_is_cut(tmp, fx):
    """Rule 2, version 2: a bad frame at or after durable_end is a torn tail, whatever the bytes
    after it say (a later frame claiming durability, as version 1's evidence, changes nothing)."""
    seg, frames = last_segment(fx.store)
    end, _ = mark_of(seg)
    after = [f for f in frames if f["off"] >= end]
    assert after and after[0]["off"] == end, "fixture: no frame starts at the mark"
    gone = keys_from(after)
    size = os.path.getsize(seg)
    forged = bytearray(frame_bytes(1, 0, 1, after[1]["first_seq"], after[1]["first_seq"], after[1]["payload"]))
    cases = {"cut inside the frame at the mark": lambda p: truncate(p, end + 5),
             "zeros from the mark on": lambda p: patch(p, end, bytes(size - end)),
             "garbage from the mark on": lambda p: patch(p, end, bytes((i * 151 + 7) & 0xFF for i in range(size - end))),
             "frame at the mark flipped, a later frame claims durability":
                 lambda p: (flip(p, end + 40), patch(p, after[1]["off"], bytes(forged)))}
    for why, damage in cases.items():
        store = fresh_copy(tmp, fx)
        damage(segments(store)[-1])
        assert_torn_at(fx, store, end, gone, why)
        assert run_in(store, "list", "53")[0] == 0
    return f"{len(cases)} torn tails at durable_end {end} ignored; export is the prefix without {sorted(gone)}"


@versions(2, 3)
def test_bad_frame_before_mark_is_corruption(tmp, fx):
    """Rule 2, version 2: a bad frame that starts before durable_end is corruption, named by file and
    frame offset, including the frame that ends exactly at durable_end (no index covers them here)."""
    seg, frames = last_segment(fx.store)
    end, _ = mark_of(seg)
    before = [f for f in frames if f["first_seq"] > 30 and f["end"] <= end]
    assert before[-1]["end"] == end
    done = []
    for f in before[::4] + [before[-1]]:
        for where, off in (("payload", (f["off"] + 32 + f["end"]) // 2), ("kind byte", f["off"] + 8)):
            store = fresh_copy(tmp, fx)
            os.remove(index_files(store)[-1])           # the open walks from sequence 31
            flip(segments(store)[-1], off)
            assert_corruption(store, (["export"], ["check"], ["list", "54"]), seg, f["off"], f"{where} of {f['off']}")
            assert "before the durable mark's end" in run_in(store, "export")[2]
        done.append(f["off"])
    return f"frames at {done} damaged before durable_end {end}: corruption at their offsets"


@versions(2, 3)
def test_log_truncated_below_mark_is_corruption(tmp, fx):
    """Rule 2, version 2: a log ending before durable_end is corruption (the mark names only synced
    bytes): at a frame boundary, inside a frame, and with no frame left."""
    seg, frames = last_segment(fx.store)
    end, _ = mark_of(seg)
    boundary = [f for f in frames if f["end"] < end][-2]["end"]
    inside = [f for f in frames if f["end"] <= end][-1]
    for cut, named in ((boundary, boundary), (inside["off"] + 10, inside["off"]), (V2_DATA, V2_DATA)):
        store = fresh_copy(tmp, fx)
        truncate(segments(store)[-1], cut)
        assert_corruption(store, (["export"], ["check"]), seg, named, f"cut at {cut}")
    return f"cuts at {boundary}, {inside['off'] + 10} and {V2_DATA} below durable_end {end} refused"


# Not v3: its last segment (the import's own) has one mark, not a second one below the import.
@versions(2)
def test_damaged_newest_slot_falls_back_to_older(tmp, fx):
    """log.md: the mark is the valid slot with the larger epoch; a damaged newest slot leaves the
    older mark in force. The fixture's older mark lies below its import: a damaged commit, corruption
    under the newest mark, is then a torn tail and the import is cut back (rule 3)."""
    seg, frames = last_segment(fx.store)
    _, number, generation, _ = seg_header(seg)
    slots = read_slots(seg)
    newest = max((0, 1), key=lambda i: slots[i][0])
    older = slots[1 - newest]
    commit = [f for f in frames if f["kind"] == 4][-1]
    assert older[1] < commit["off"] < slots[newest][1], "fixture: the commit is not between the two marks"
    gone = keys_from(f for f in frames if f["off"] >= older[1])
    # control: the newest mark in force, a damaged commit is corruption
    store = fresh_copy(tmp, fx)
    os.remove(index_files(store)[-1])
    flip(segments(store)[-1], commit["off"] + 34)
    assert_corruption(store, (["export"],), seg, commit["off"], "newest mark intact")
    damages = newest_slot_damages(number, generation, slots[newest])
    for why, data in damages:
        store = fresh_copy(tmp, fx)
        os.remove(index_files(store)[-1])
        patch(segments(store)[-1], SLOT_OFF[newest], data)
        rc, line, out = describe_mark(store)
        assert rc == 0, f"{why}: {out}"
        assert f"slot {1 - newest} (epoch {older[0]}): durable_end {older[1]}, next_seq {older[2]}" in line, \
            f"{why}: {line}"
        flip(segments(store)[-1], commit["off"] + 34)
        assert_export_without(fx, store, gone, why)
        rc, out, _ = run_in(store, "check")
        assert rc == 0 and "torn tail" in out and "transaction cut back" in out, f"{why}: {out}"
    return f"{len(damages)} damages of slot {newest} (epoch {slots[newest][0]}): slot {1 - newest} " \
           f"(epoch {older[0]}, durable_end {older[1]}) used"


# Not v3: its last segment (the import's own) has one mark, not a second one below the import.
@versions(2)
def test_both_slots_damaged_means_no_mark(tmp, fx):
    """log.md: no valid slot means durable_end = 12288 and next_seq = the header's first sequence:
    then a bad first frame of the last segment is a torn tail (with no index proving it durable)."""
    seg, frames = last_segment(fx.store)
    _, number, generation, first_seq = seg_header(seg)
    slots = read_slots(seg)
    first = frames[0]
    # control: with the marks, a damaged first frame is corruption
    store = fresh_copy(tmp, fx)
    remove_indexes(store)
    flip(segments(store)[-1], first["off"] + 40)
    assert_corruption(store, (["export"], ["check"]), seg, first["off"], "marks intact")
    kept = {}
    for f in log_frames(fx.store):
        for r in f["recs"]:
            if r["seq"] < first_seq:
                kept[r["key"]] = r
    pairs = [(newest_slot_damages(number, generation, slots[0])[i][1],
              newest_slot_damages(number, generation, slots[1])[j][1]) for i, j in ((1, 1), (0, 2), (3, 4), (6, 5))]
    for s0, s1 in pairs:
        store = fresh_copy(tmp, fx)
        remove_indexes(store)
        patch(segments(store)[-1], SLOT_OFF[0], s0)
        patch(segments(store)[-1], SLOT_OFF[1], s1)
        rc, line, out = describe_mark(store)
        assert rc == 0 and "no valid mark slot" in line and \
            line.endswith(f"durable_end {V2_DATA}, next_seq {first_seq}"), line
        flip(segments(store)[-1], first["off"] + 40)
        assert sorted(key_of(r) for r in export_of(store)) == sorted(kept), "export is not the prefix"
        rc, out, _ = run_in(store, "check")
        assert rc == 0 and "torn tail" in out and f"offset {first['off']}:" in out, out
    return f"{len(pairs)} pairs of damaged slots: durable_end {V2_DATA}, next_seq {first_seq}; first frame torn"


@versions(2, 3)
def test_frame_across_durable_end_is_corruption(tmp, fx):
    """log.md frame validity, durability.md rule 2: a frame that runs across durable_end is corruption
    (a mark names frame ends only), here with every byte of the frame intact."""
    seg, frames = last_segment(fx.store)
    last, commit = frames[-1], [f for f in frames if f["kind"] == 4][-1]
    done = []
    for f, drop_index in ((last, False), (commit, True)):
        store = fresh_copy(tmp, fx)
        if drop_index:
            os.remove(index_files(store)[-1])
        set_mark(segments(store)[-1], (f["off"] + f["end"]) // 2, f["first_seq"])
        assert_corruption(store, (["export"], ["check"]), seg, f["off"], f"mark inside the frame at {f['off']}")
        assert "runs across the durable mark's end" in run_in(store, "export")[2]
        done.append(f["off"])
    return f"marks inside the frames at {done}: corruption at the frame"


@versions(2, 3)
def test_wrong_next_seq_at_durable_end_is_corruption(tmp, fx):
    """log.md: the frame at durable_end has sequence next_seq. A mark whose next_seq disagrees with the
    frames (the one at durable_end, or the end of those before it) is corruption named at durable_end."""
    seg, frames = last_segment(fx.store)
    end, nxt = mark_of(seg)
    at = [f for f in frames if f["off"] == end][0]
    following = frames[frames.index(at) + 1]
    # the frame at durable_end rewritten (checksum right) with a sequence other than next_seq
    resequenced = frame_bytes(at["kind"], at["flags"], at["count"], nxt + 3, at["durable_seq"], at["payload"])
    cases = [("next_seq + 1", end, nxt + 1, None), ("next_seq - 1", end, nxt - 1, None),
             ("log ending at durable_end", end, nxt + 1, end),
             ("mark one frame further, same next_seq", following["off"], nxt, None),
             ("frame at durable_end with another sequence", end, nxt, resequenced)]
    for why, m_end, m_next, damage in cases:
        store = fresh_copy(tmp, fx)
        if isinstance(damage, int):
            truncate(segments(store)[-1], damage)
        elif damage is not None:
            patch(segments(store)[-1], at["off"], damage)
        set_mark(segments(store)[-1], m_end, m_next)
        assert_corruption(store, (["export"], ["check"]), seg, m_end, why)
        assert "durable mark" in run_in(store, "export")[2]
    store = fresh_copy(tmp, fx)
    set_mark(segments(store)[-1], following["off"], following["first_seq"])       # control: a true mark
    assert export_of(store) == fx.export()
    return f"{len(cases)} marks with a wrong next_seq refused at durable_end"


def test_version_8_segment_refused(tmp, fx):
    """log.md, conventions.md: a segment of a version other than 1 to 7 (a newer jobq wrote it)
    is refused with an error naming the file and the version, whichever segment it is."""
    done = []
    for i in sorted({0, len(segments(fx.store)) - 1}):
        store = fresh_copy(tmp, fx)
        path = segments(store)[i]
        set_header_field(path, 8, "<I", 8)
        for cmd in (["export"], ["check"], ["list", "53"]):
            rc, _, err = run_in(store, *cmd)
            assert rc == 1 and os.path.basename(path) in err and "version 8" in err and "1, 2, 3, 4, 5, 6, 7" in err, err
        done.append(os.path.basename(path))
    return f"version 8 in {done} refused"


@versions(5, 6)
def test_v4_preallocated_zeros(tmp, fx):
    """log.md "Version 4", durability.md rule 2: zeros after the last frame of the last segment are
    the log's clean end; a non-zero byte among them makes a torn tail; a frame torn into them (its
    first bytes, then zeros) is a torn tail; zeros from before the mark are corruption; zeros after
    the last frame of a segment that is not the last are corruption."""
    seg, frames = last_segment(fx.store)
    size = os.path.getsize(seg)
    end = frames[-1]["end"]
    assert size > end + 4096, f"the fixture keeps its preallocated zeros ({size} bytes, log ends at {end})"
    store = fresh_copy(tmp, fx)
    rc, out, err = run_in(store, "check")
    assert rc == 0 and "torn tail" not in out, f"{out}{err}"
    # A non-zero byte at the very end: a torn tail at the log's end, nothing lost.
    store = fresh_copy(tmp, fx)
    patch(segments(store)[-1], size - 1, b"\x01")
    rc, out, err = run_in(store, "check")
    assert rc == 0 and "torn tail" in out and f"offset {end}:" in out, f"{out}{err}"
    assert export_of(store) == fx.export()
    # The last frame torn into the zeros: its first half kept, the rest zeros.
    durable_end = mark_of(seg)[0]
    last = frames[-1]
    assert last["off"] >= durable_end, "the fixture's last frame is after the mark"
    store = fresh_copy(tmp, fx)
    mid = (last["off"] + last["end"]) // 2
    patch(segments(store)[-1], mid, bytes(last["end"] - mid))
    rc, out, err = run_in(store, "check")
    assert rc == 0 and "torn tail" in out and f"offset {last['off']}:" in out, f"{out}{err}"
    assert_export_without(fx, store, set(last["keys"]), "torn into zeros")
    # Zeros from a frame before the mark: durable bytes lost.
    before = [f for f in frames if f["end"] <= durable_end]
    assert before, "frames before the mark"
    store = fresh_copy(tmp, fx)
    off = before[-1]["off"]
    patch(segments(store)[-1], off, bytes(size - off))
    assert_corruption(store, (["export"], ["check"]), seg, off, "zeros before the mark")
    # Zeros after the last frame of an earlier segment.
    store = fresh_copy(tmp, fx)
    first = segments(store)[0]
    with open(first, "ab") as f:
        f.write(bytes(4096))
    rc, out, err = run_in(store, "check")       # export trusts the index chain there (rule 6)
    assert rc == 1 and os.path.basename(first) in out + err, f"{out}{err}"
    return f"clean end at {end} ({size - end} zeros), torn tails, zeros before the mark and in a sealed segment refused"


@versions(2, 3)
def test_v2_segment_shorter_than_its_mark_pages_is_damaged(tmp, fx):
    """log.md: a version-2 segment is created with its 12288 bytes, so a shorter one is damaged
    (refused naming the file: a damaged segment header, rule 1). Bytes 64..4096 are written as zeros
    but no checksum covers them and nothing reads them: a non-zero one is only noted."""
    store = fresh_copy(tmp, fx)
    seg = segments(store)[-1]
    truncate(seg, SLOT_OFF[1] + 56)
    rc, _, err = run_in(store, "export")
    assert rc == 1 and os.path.basename(seg) in err and f"{V2_DATA}" in err, err
    store = fresh_copy(tmp, fx)
    seg = segments(store)[0]
    patch(seg, 1000, b"\1")
    rc, out, err = run_in(store, "check")
    assert rc == 0 and any(os.path.basename(seg) in line and "at 1000" in line
                           for line in out.splitlines() if line.startswith("note:")), f"{out}{err}"
    return "short segment refused, non-zero pad noted"


@versions(1)
def test_v1_evidence_never_inside_a_decodable_header(tmp, fx):
    """durability.md rule 2, version 1 (refined): the search for a later frame claiming durability
    starts after a bad frame whose header decodes with the expected sequence (its extent is never
    searched), else at b + 1, and skips the inside of every frame it finds. A forged frame with
    first_seq and durable_seq >= s inside the torn last frame (a record read 4 bytes in can pass for
    one) therefore changes nothing, unless the bad frame's own header does not decode."""
    seg, frames = last_segment(fx.store)
    last = frames[-1]
    s = last["first_seq"]
    gone = set(last["keys"])
    evidence = frame_bytes(2, 0, 1, s + 1, s + 1, bytes(10))
    with open(seg, "rb") as f:
        data = f.read()
    # A: the last frame torn (cut 1 byte short), a forged evidence frame in its payload: torn tail
    a = bytearray(data[:last["end"] - 1])
    a[last["off"] + 40:last["off"] + 40 + len(evidence)] = evidence
    # B: the same with the bad frame's kind byte 0: its header does not decode; the search from b + 1
    # finds the forged frame: corruption
    b = bytearray(a)
    b[last["off"] + 8] = 0
    # C: header not decodable, then a valid frame (no claim) holding the forged frame in its payload
    holder = frame_bytes(1, 0, 1, s + 1, 0, bytes(8) + evidence)
    c = bytes(b[:last["off"] + 32]) + holder
    for name, content, corrupt in (("A", a, False), ("B", b, True), ("C", c, False)):
        store = fresh_copy(tmp, fx)
        os.remove(index_files(store)[-1])
        build_index(store, 31, 46)                   # the chain ends before the last frame, as in the fixture
        with open(segments(store)[-1], "wb") as f:
            f.write(content)
        if corrupt:
            assert_corruption(store, (["export"], ["check"]), seg, last["off"], f"case {name}")
            assert f"the frame at offset {last['off'] + 40}" in run_in(store, "export")[2]
        else:
            assert_torn_at(fx, store, last["off"], gone, f"case {name}")
    return "forged frame inside the torn frame's extent ignored (A), found from b + 1 (B), skipped inside a found frame (C)"


@versions(1)
def test_v1_log_continued_in_a_v2_segment(tmp, fx):
    """CHANGES.md, durability.md: a writable open continues a version-1 log in a new version-2 segment.
    The v1 fixture split after sequence 30 into such a segment (marked at its end, as a clean close
    leaves it) reads the same; the mark now decides for the last frame, a torn tail in the v1 log."""
    store = fresh_copy(tmp, fx)
    old, new, _ = split_log(store, 30, version=2)
    rc, out, err = run_in(store, "check")
    assert rc == 0 and "segment versions: [1, 2]" in out, out + err
    assert export_of(store) == fx.export()
    last = raw_frames(new)[-1]
    assert mark_of(new) == (last["end"], last["last_seq"] + 1)
    flip(new, (last["off"] + last["end"]) // 2)
    assert_corruption(store, (["export"], ["check"]), new, last["off"], "last frame before the mark")
    store = fresh_copy(tmp, fx)
    old, new, _ = split_log(store, 30, version=2)
    set_mark(new, last["off"], last["first_seq"])            # the mark one sync behind: torn
    flip(new, (last["off"] + last["end"]) // 2)
    assert_torn_at(fx, store, last["off"], set(last["keys"]), "last frame after the mark")
    return f"v1 segment + v2 segment: same export; the last frame at {last['off']} judged by the mark"


@versions()
def test_worked_example_as_a_v2_store(tmp, fx):
    """log.md's worked example as a whole version-2 store: the spider and jobs frames at 12288 and
    12337, the mark from the spec's hex dump in slot 1 (epoch 1, durable_end 12461, next_seq 3).
    The example's spider id 7 is made 1 (the id a first registration gets; CRCs recomputed)."""
    frames, mark = spec_hex_blocks()[:2]
    assert len(mark) == 1 and mark[0] == slot_bytes(1, 1, 1, 12461, 3), "the spec's mark bytes"
    spider, jobs = bytearray(frames[0]), bytearray(frames[1])
    assert spider[36:40] == jobs[44:48] == struct.pack("<I", 7)
    spider[36:40] = jobs[44:48] = struct.pack("<I", 1)
    jobs[36:40] = struct.pack("<I", mcrc(bytes(jobs[40:])))                # the record's CRC
    frames = [frame_bytes(2, 0, 1, 1, 0, bytes(spider[32:])), frame_bytes(1, 0, 1, 2, 0, bytes(jobs[32:]))]
    store = os.path.join(tmp, "example")
    g = os.path.join(store, "gen-0000000000000001")
    os.makedirs(g, exist_ok=True)
    cur = b"JOBQCUR\0" + struct.pack("<IIQI", 1, 0, 1, 0)
    with open(os.path.join(store, "CURRENT"), "wb") as f:
        f.write(cur + struct.pack("<I", mcrc(cur)))
    seg = bytearray(new_segment(2, 1, 1, 1))
    seg[SLOT_OFF[1]:SLOT_OFF[1] + 56] = mark[0]
    seg += b"".join(frames)
    assert len(seg) == 12461
    with open(os.path.join(g, "log-0000000001.jql"), "wb") as f:
        f.write(seg)
    rc, line, out = describe_mark(store)
    assert rc == 0 and "slot 1 (epoch 1): durable_end 12461, next_seq 3" in line, out
    rc, out, err = run_in(store, "export")
    want = ('{"spider_catalog":{"project":53,"id":1,"name":"spider1","next_job":82}}\n'
            '{"key":"53/1/81","project":53,"spider":"spider1","state":"pending","priority":2,"tags":["a"],'
            '"pending_time":1397762393489,"units":1}\n')
    assert rc == 0 and out == want, out + err
    truncate(os.path.join(g, "log-0000000001.jql"), 12337)          # the jobs frame lost below the mark
    assert_corruption(store, (["export"],), os.path.join(g, "log-0000000001.jql"), 12337, "example cut")
    return "frames at 12288 and 12337 and the spec's mark decode; a cut below the mark is refused"


@versions()
def test_compact_record_example_as_a_v5_segment(tmp, fx):
    """log.md, "Compact record": the example's jobs frame after the worked example's spider frame, in
    a version-5 segment (spider id 7 made 1, CRCs recomputed), exports as the wide example does; the
    same record with a varint in a longer form, a truncated body or a document that is not an object
    is corruption."""
    with open(SPEC_LOG, encoding="utf-8") as f:
        text = f.read()
    block = text.split("## Compact record", 1)[1].split("```")[1]
    jobs = bytearray(b"".join(bytes.fromhex(m.group(1).replace(" ", "")) for m in
                              re.finditer(r"^[0-9a-f]{4}: ((?:[0-9a-f]{2} )*[0-9a-f]{2})", block, re.M)))
    spider = bytearray(spec_hex_blocks()[0][0])
    assert struct.unpack_from("<I", jobs, 32)[0] == 0x80000000 | (len(jobs) - 40), "a compact record"
    assert jobs[53] == 7 and spider[36:40] == struct.pack("<I", 7)
    spider[36:40] = struct.pack("<I", 1)

    def store_with(record):
        store = os.path.join(tmp, f"compact-{len(os.listdir(tmp))}")
        g = os.path.join(store, "gen-0000000000000001")
        os.makedirs(g)
        cur = b"JOBQCUR\0" + struct.pack("<IIQI", 1, 0, 1, 0)
        with open(os.path.join(store, "CURRENT"), "wb") as f:
            f.write(cur + struct.pack("<I", mcrc(cur)))
        rec = bytearray(record)
        struct.pack_into("<I", rec, 0, 0x80000000 | (len(rec) - 8))
        struct.pack_into("<I", rec, 4, mcrc(bytes(rec[8:])))
        seg = bytearray(new_segment(5, 1, 1, 1))
        seg += frame_bytes(2, 0, 1, 1, 0, bytes(spider[32:])) + frame_bytes(1, 0, 1, 2, 0, bytes(rec))
        with open(os.path.join(g, "log-0000000001.jql"), "wb") as f:
            f.write(seg)
        return store, g
    rec = bytearray(jobs[32:])
    rec[21] = 1                                                         # spider id 7 -> 1
    store, _ = store_with(rec)
    rc, out, err = run_in(store, "export")
    want = ('{"spider_catalog":{"project":53,"id":1,"name":"spider1","next_job":82}}\n'
            '{"key":"53/1/81","project":53,"spider":"spider1","state":"pending","priority":2,"tags":["a"],'
            '"pending_time":1397762393489,"units":1}\n')
    assert rc == 0 and out == want, out + err
    bad = {"long varint": rec[:21] + b"\x81\x00" + rec[22:], "cut body": rec[:30],
           "document not an object": rec[:-1] + b" ", "more tags than stored": rec[:30] + b"\x02" + rec[31:]}
    for what, r in bad.items():
        store, g = store_with(r)
        rc, out, err = run_in(store, "check")
        assert rc == 1 and "log-0000000001.jql" in out + err, (what, out, err)
    return "the compact example decodes; a long varint, a cut body, a bad document, a wrong tag count refused"


@versions(2, 3, 4)
def test_relocation_flag(tmp, fx):
    """log.md, frame header: flag bit 1 (relocated) is valid on a jobs frame outside a transaction, a
    byte-for-byte copy of a current version (what compaction writes), and invalid on any other frame.
    The copy is appended below the durable mark, so that a reader refusing the flag calls it
    corruption instead of cutting it as a torn tail."""
    out = []
    for kind in ("jobs", "spider", "jobs+txn"):
        store = fresh_copy(tmp, fx, f"relocated-{kind.replace('+', '-')}")
        seg = segments(store)[-1]
        frames = log_frames(store)
        nxt = frames[-1]["last_seq"] + 1
        if kind == "spider":
            frame = frame_bytes(2, 2, 1, nxt, 0, next(f for f in frames if f["kind"] == 2)["payload"])
        else:
            rec = next(f for f in reversed(frames) if f["kind"] == 1)["recs"][-1]
            with open(rec["path"], "rb") as f:
                f.seek(rec["off"])
                copy = f.read(rec["end"] - rec["off"])
            frame = frame_bytes(1, 3 if kind == "jobs+txn" else 2, 1, nxt, 0, copy)
        end = os.path.getsize(seg)
        assert end == frames[-1]["end"] or frames[-1]["path"] != seg, "the fixture's last segment ends in a frame"
        patch(seg, end, frame)
        set_mark(seg, end + len(frame), nxt + 1)
        if kind == "jobs":
            rc, o, e = run_in(store, "check")
            assert rc == 0, o + e
            assert export_of(store) == export_of(fx.store), "a relocated copy changed the export"
        else:
            rc, o, e = run_in(store, "export")
            assert rc == 1 and "relocat" in e and f"offset {end}" in e, (kind, rc, o, e)
        out.append(kind)
    return f"relocated {out[0]} frame kept; on a spider frame and with the transaction flag: corruption"
