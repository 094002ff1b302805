"""Format 9 (layout.md, "CURRENT" and "Log start"; index.md, "Matching index files to the log"):
the spec reader reads the v9 fixture, a store whose online compaction removed segments 1 to 6 and
moved the log start to 7. Its first index file begins before the log; its spiders come from the
catalog frame online compaction wrote after the records that use them. A removed first segment
is refused as damage."""

import os
import struct

from fixture_tools import (  # noqa: E402
    Fixture, export_of, fresh_copy, gen_dir, index_files, reader, run, segments, versions,
)

V9 = Fixture(9)


@versions()
def test_v9_reads_a_log_that_starts_at_segment_7(tmp, fx):
    store = fresh_copy(tmp, V9)
    with open(os.path.join(store, "CURRENT"), "rb") as f:
        current = f.read()
    assert struct.unpack_from("<I", current, 8)[0] == 2 and struct.unpack_from("<I", current, 24)[0] == 7
    names = [os.path.basename(s) for s in segments(store)]
    assert names[0] == "log-0000000007.jql", names
    want = V9.export()
    assert export_of(store) == want, "the v9 export differs"
    p = run(store, "check")
    assert p.returncode == 0 and "check: ok" in p.stdout, f"{p.stdout}{p.stderr}"
    first = min(int(os.path.basename(f)[4:20], 16) for f in index_files(store))
    assert first < reader.Store(store).log_first, "the fixture's first index file begins before the log"
    # without index files: the log alone, its spiders from the catalog frame at its end
    for f in index_files(store):
        os.remove(f)
    assert export_of(store) == want, "the v9 export differs when replayed from the log"
    p = run(store, "check")
    assert p.returncode == 0 and "check: ok" in p.stdout, f"{p.stdout}{p.stderr}"
    return f"{len(want)} jobs from segments 7 to {names[-1][4:14].lstrip('0')}, with and without index files"


@versions()
def test_v9_a_removed_first_segment_is_damage(tmp, fx):
    store = fresh_copy(tmp, V9)
    os.remove(os.path.join(gen_dir(store), "log-0000000007.jql"))
    p = run(store, "export")
    assert p.returncode != 0 and "log segment 7 is missing" in p.stderr, f"{p.stdout}{p.stderr}"
    # a segment below the start is still the log's (compaction's removals were cut short)
    store = fresh_copy(tmp, V9, "v9-below")
    cur = os.path.join(store, "CURRENT")
    with open(cur, "rb") as f:
        data = bytearray(f.read())
    struct.pack_into("<I", data, 24, 8)
    struct.pack_into("<I", data, 28, reader.masked_crc(bytes(data[:28])))
    with open(cur, "wb") as f:
        f.write(data)
    assert export_of(store) == V9.export(), "a segment below the log start is read as part of the log"
    return "segment 7 removed: refused; CURRENT naming 8 with 7 left: 7 still read"


def _reach(n):
    b = b"JOBQRCH\0" + struct.pack("<II", 1, n)
    return b + struct.pack("<I", reader.masked_crc(b))


@versions()
def test_reach_names_the_newest_segment(tmp, fx):
    """Format 10 (layout.md, "REACH"): a log shorter than REACH says is damage at the first
    missing segment; REACH at the last segment, or none (an older store), reads as before."""
    store = fresh_copy(tmp, V9, "v9-reach")
    path = os.path.join(gen_dir(store), "REACH")
    with open(path, "wb") as f:
        f.write(_reach(9))
    assert export_of(store) == V9.export(), "REACH at the last segment"
    p = run(store, "check")
    assert p.returncode == 0 and "check: ok" in p.stdout, f"{p.stdout}{p.stderr}"
    with open(path, "wb") as f:
        f.write(_reach(11))
    p = run(store, "export")
    assert p.returncode != 0 and "log segment 10 is missing" in p.stderr, f"{p.stdout}{p.stderr}"
    with open(path, "wb") as f:
        f.write(_reach(9)[:16] + b"\0\0\0\0")
    p = run(store, "export")
    assert p.returncode != 0 and "REACH" in p.stderr and "CRC" in p.stderr, f"{p.stdout}{p.stderr}"
    return "REACH 9: reads as before; REACH 11: segment 10 missing; a bad CRC: damage"


@versions()
def test_v10_reads_with_its_reach(tmp, fx):
    """The v10 fixture: written by format 10, REACH naming its last segment."""
    v10 = Fixture(10)
    store = fresh_copy(tmp, v10, "v10")
    st = reader.Store(store)
    assert st.reach == st.segs.last, (st.reach, st.segs.last)
    assert export_of(store) == v10.export(), "the v10 export differs"
    p = run(store, "check")
    assert p.returncode == 0 and "check: ok" in p.stdout, f"{p.stdout}{p.stderr}"
    return f"{len(v10.export())} jobs, REACH {st.reach}"
