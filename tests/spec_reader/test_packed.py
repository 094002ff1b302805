"""Format 7 (log.md, "Packed document" and "Dictionary"; index.md, "Catalog"): the spec reader
decodes the v7 fixture's packed records through the dictionary copies of its index files and
through its dictionary frame, the spec's packed example, and refuses damage. Needs `zstandard`."""

import os
import re
import struct

from fixture_tools import (  # noqa: E402
    SPEC_LOG, Fixture, export_of, fresh_copy, gen_dir, index_files, jobs_only, parse_jsonl, reader,
    run, run_in, segments, versions,
)

V7 = Fixture(7)


def _frames(path):
    """(offset, kind, payload) of each frame of a version-6 segment, from its header alone."""
    with open(path, "rb") as f:
        data = f.read()
    off, out = 12288, []
    while off + 32 <= len(data):
        ln, kind = struct.unpack_from("<IB", data, off + 4)
        if kind == 0:
            break
        out.append((off, kind, data[off + 32:off + 32 + ln]))
        off += 32 + ln
    return out


@versions()
def test_v7_export_check_and_replay(tmp, fx):
    store = fresh_copy(tmp, V7)
    p = run(store, "export")
    assert p.returncode == 0, p.stderr
    got, want = jobs_only(parse_jsonl(p.stdout)), V7.export()
    assert got == want, "the v7 export differs"
    p = run(store, "check")
    assert p.returncode == 0 and "check: ok" in p.stdout, f"{p.stdout}{p.stderr}"
    kinds = [k for s in segments(store) for _, k, _ in _frames(s)]
    assert kinds.count(5) == 1, f"one dictionary frame: {kinds}"
    # without index files, the dictionary comes from its frame
    for f in index_files(store):
        os.remove(f)
    reader.DICTS.clear()
    assert export_of(store) == want, "the v7 export differs when replayed from the log"
    return f"{len(want)} jobs, packed ones through the index catalog and through the dictionary frame"


@versions()
def test_v7_missing_dictionary_is_corruption(tmp, fx):
    results = []
    # (a flipped byte inside a dictionary's content, its CRC made good, need not change what
    # the records decode to: only a dictionary the records do not find is certain damage)
    for what in ("id",):
        store = fresh_copy(tmp, V7, f"v7-{what}")
        for f in index_files(store):
            os.remove(f)
        reader.DICTS.clear()
        done = False
        for s in segments(store):
            with open(s, "rb") as fh:
                data = bytearray(fh.read())
            for off, kind, payload in _frames(s):
                if kind != 5:
                    continue
                if what == "id":
                    struct.pack_into("<I", data, off + 32, 9)
                else:
                    data[off + 32 + len(payload) // 2] ^= 0x55
                struct.pack_into("<I", data, off, reader.masked_crc(bytes(data[off + 4:off + 32 + len(payload)])))
                done = True
            with open(s, "wb") as fh:
                fh.write(data)
        assert done
        rc, out, err = run_in(store, "export")
        assert rc == 1 and ("dictionary 1" in err or "decompress" in err or "packed" in err), (rc, err)
        results.append(err.strip().splitlines()[-1][:90])
    return "; ".join(results)


@versions()
def test_spec_packed_example(tmp, fx):
    """log.md, "Packed document": the example record decodes with the spec's raw-content dictionary
    and not without it; a frame cut short, a length one off and a length over the limit are refused."""
    with open(SPEC_LOG, encoding="utf-8") as f:
        text = f.read()
    sec = text.split("## Packed document", 1)[1].split("## Dictionary", 1)[0]
    block = sec.split("```")[1]
    rec = bytes.fromhex("".join(m.group(1).replace(" ", "") for m in
                                re.finditer(r"^[0-9a-f]{4}: ((?:[0-9a-f]{2} )*[0-9a-f]{2})", block, re.M)))
    dict_text = re.search(r"\*\*raw-content dictionary\*\*\n`([^`]+)`", sec).group(1)
    doc = re.search(r"with the document\n`([^`]+)`", sec).group(1)
    assert len(rec) == 52, len(rec)
    gen = os.path.join(tmp, "gen-0000000000000001")
    path = os.path.join(gen, "log-0000000001.jql")
    reader.DICTS.clear()
    try:
        reader.decode_record(reader.Buf(rec, path), 0, "example")
        raise AssertionError("decoded without its dictionary")
    except reader.Damage as e:
        assert "dictionary 1" in e.msg, e.msg
    reader.DICTS[(gen, 1)] = dict_text.encode()
    r, end = reader.decode_record(reader.Buf(rec, path), 0, "example")
    assert end == 52 and r.doc_text == doc and r.key == (53, 7, 81) and r.state == 2 and r.prev == 3, r.doc_text
    bad = 0
    for variant in (rec[:-1], rec[:34] + b"\x3b" + rec[35:], rec[:34] + b"\xff\xff\xff\x7f" + rec[35:]):
        v = bytearray(variant)
        struct.pack_into("<I", v, 0, 0x80000000 | (len(v) - 8))
        struct.pack_into("<I", v, 4, reader.masked_crc(bytes(v[8:])))
        try:
            reader.decode_record(reader.Buf(bytes(v), path), 0, "variant")
        except reader.Damage:
            bad += 1
    assert bad == 3, bad
    reader.DICTS.clear()
    return f"{doc} from 19 packed bytes; 3 damaged variants refused"
