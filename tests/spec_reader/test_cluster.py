"""Format 8 (log.md, "Raft entry"; layout.md, "RAFT"): the spec reader reads the v8 fixture, one
node of a three-node cluster whose log ends in an entry that was never committed, applying entries
only up to the highest index an entry frame says committed; a torn entry is cut; raising a commit
point makes the last entry applied."""

import os
import struct

from fixture_tools import (  # noqa: E402
    Fixture, export_of, fresh_copy, index_files, mcrc, raw_frames, reader, run, segments, versions,
)

V8 = Fixture(8)


def _frames(path):
    """(offset, kind, payload) of each frame of a segment (fixture_tools' own walk)."""
    return [(f["off"], f["kind"], f["payload"]) for f in raw_frames(path)]


def _entries(store):
    """(segment path, offset, payload) of every entry frame, in log order."""
    return [(s, off, p) for s in segments(store) for off, kind, p in _frames(s) if kind == 6]


@versions()
def test_v8_applies_committed_entries_only(tmp, fx):
    store = fresh_copy(tmp, V8)
    with open(os.path.join(store, "RAFT"), "rb") as f:
        raft = f.read()
    assert len(raft) == 64 and raft[:8] == b"JOBQRAFT" and struct.unpack_from("<I", raft, 60)[0] == mcrc(raft[:60])
    want = V8.export()
    assert export_of(store) == want, "the v8 export differs"
    p = run(store, "check")
    assert p.returncode == 0 and "check: ok" in p.stdout, f"{p.stdout}{p.stderr}"
    entries = _entries(store)
    heads = [struct.unpack_from("<QQQQBBHIII", e[2]) for e in entries]
    committed = max(h[3] for h in heads if h[5] & 1)
    last = heads[-1]
    assert last[0] > committed and last[4] == 1, f"the last entry ({last[0]}) is normal and not committed ({committed})"
    assert not any("never-committed" in str(r) for r in want)
    # without index files, the log alone gives the same answer
    for f in index_files(store):
        os.remove(f)
    assert export_of(store) == want, "the v8 export differs when replayed from the log"
    return f"{len(entries)} entries, committed up to {committed}, the last ({last[0]}) appended only"


@versions()
def test_v8_a_raised_commit_point_applies_the_last_entry(tmp, fx):
    store = fresh_copy(tmp, V8)
    path, off, payload = _entries(store)[-1]
    index = struct.unpack_from("<Q", payload, 0)[0]
    # the last entry's own frame cannot name itself; a blank entry after it may
    with open(path, "rb") as f:
        data = bytearray(f.read())
    end = len(data.rstrip(b"\0"))
    end = max(end, off)
    # append a blank entry (index + 1) whose commit point is the last entry, at the log's end
    last_frame_end = None
    for o, kind, p in _frames(path):
        last_frame_end = o + 32 + len(p)
        last_seq = struct.unpack_from("<Q", data, o + 16)[0] + struct.unpack_from("<I", data, o + 12)[0] - 1
    body = struct.pack("<QQQQBBHIII", index + 1, 99, 1, index, 0, 1, 0, 0, 0, 0)
    head = bytearray(struct.pack("<IIBBHIQQ", 0, len(body), 6, 0, 0, 1, last_seq + 1, 0))
    frame = head + body
    struct.pack_into("<I", frame, 0, mcrc(bytes(frame[4:])))
    data[last_frame_end:last_frame_end + len(frame)] = frame
    with open(path, "wb") as f:
        f.write(bytes(data))
    got = export_of(store)
    assert any("never-committed" in str(r) for r in got), "the entry the new commit point names is applied"
    return f"a blank entry {index + 1} committing {index}: its job appears"


def _append_after_log(path, frames_bytes):
    """Write `frames_bytes` at the log's end (after its last frame): past the durable mark."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    end = 12288
    last_seq = 0
    for o, kind, p in _frames(path):
        end = o + 32 + len(p)
        last_seq = struct.unpack_from("<Q", data, o + 16)[0] + struct.unpack_from("<I", data, o + 12)[0] - 1
    data[end:end + len(frames_bytes)] = frames_bytes
    with open(path, "wb") as f:
        f.write(bytes(data))
    return last_seq


def _frame(kind, seq, payload):
    head = bytearray(struct.pack("<IIBBHIQQ", 0, len(payload), kind, 0, 0, 1, seq, 0))
    out = head + payload
    struct.pack_into("<I", out, 0, mcrc(bytes(out[4:])))
    return bytes(out)


@versions()
def test_v8_torn_entry_is_cut(tmp, fx):
    store = fresh_copy(tmp, V8)
    path = segments(store)[-1]
    index = struct.unpack_from("<Q", _entries(store)[-1][2], 0)[0]
    with open(path, "rb") as f:
        data = f.read()
    last_seq = 0
    for o, kind, p in _frames(path):
        last_seq = struct.unpack_from("<Q", data, o + 16)[0] + struct.unpack_from("<I", data, o + 12)[0] - 1
    spider = struct.pack("<IIH", 53, 9, 4) + b"torn"
    data_frame = _frame(2, last_seq + 2, spider)
    head = struct.pack("<QQQQBBHIII", index + 1, 99, 1, index, 1, 1, 0, 1, len(data_frame), 0)
    _append_after_log(path, _frame(6, last_seq + 1, head) + data_frame[:len(data_frame) // 2])
    assert export_of(store) == V8.export(), "a half-written entry is cut: nothing of it is applied"
    # a data frame outside any entry (the entry frame announcing none) is corruption
    store2 = fresh_copy(tmp, V8, "store2")
    _append_after_log(segments(store2)[-1], _frame(2, last_seq + 1, spider))
    rc, _, err = reader.main(["reader.py", store2, "export"]), "", ""
    assert rc != 0, "a frame outside any Raft entry is refused"
    return "a half-written entry is cut at its entry frame; a frame outside any entry is corruption"


@versions()
def test_v8_a_purge_point_applies_the_entries_up_to_it(tmp, fx):
    """log.md, "Applied entries": entries up to the RAFT file's purge point are applied (Raft purges
    only applied entries; an installed snapshot's entries are all applied)."""
    store = fresh_copy(tmp, V8)
    index = struct.unpack_from("<Q", _entries(store)[-1][2], 0)[0]
    path = os.path.join(store, "RAFT")
    with open(path, "rb") as f:
        raft = bytearray(f.read())
    flags = struct.unpack_from("<I", raft, 12)[0] | 4
    struct.pack_into("<IQQQ", raft, 12, flags, *struct.unpack_from("<QQ", raft, 16), index)
    struct.pack_into("<QQ", raft, 40, 1, 1)
    struct.pack_into("<I", raft, 60, mcrc(bytes(raft[:60])))
    with open(path, "wb") as f:
        f.write(bytes(raft))
    got = export_of(store)
    assert any("never-committed" in str(r) for r in got), "the entry at the purge point is applied"
    raft[33] ^= 1
    with open(path, "wb") as f:
        f.write(bytes(raft))
    rc, _, err = reader.main(["reader.py", store, "export"]), "", ""
    assert rc != 0, "a damaged RAFT file is refused"
    return f"a purge point at entry {index} applies it"


V11 = Fixture(11)


@versions()
def test_v11_raft_records_its_owner(tmp, fx):
    """layout.md, "RAFT" (format 11): version 2 records the node the directory belongs to in bytes
    56..60; the reader reads the node's store as before, and refuses an owner that does not match
    the version."""
    store = fresh_copy(tmp, V11)
    path = os.path.join(store, "RAFT")
    with open(path, "rb") as f:
        raft = bytearray(f.read())
    version, owner = struct.unpack_from("<I", raft, 8)[0], struct.unpack_from("<I", raft, 56)[0]
    assert (version, owner) == (2, 1), (version, owner)
    assert export_of(store) == V11.export(), "the v11 export differs"
    struct.pack_into("<I", raft, 56, 0)
    struct.pack_into("<I", raft, 60, mcrc(bytes(raft[:60])))
    with open(path, "wb") as f:
        f.write(bytes(raft))
    rc = reader.main(["reader.py", store, "export"])
    assert rc != 0, "version 2 without an owner is refused"
    return "RAFT version 2, owner node 1"
