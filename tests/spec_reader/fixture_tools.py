"""Helpers of the spec reader's tests: the fixtures, running reader.py, and a minimal frame walk,
mark codec and index builder written apart from reader.py (from format-spec/ as well), so that
the two check each other. Standard library only."""

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
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SPEC_LOG = os.path.join(REPO, "format-spec", "log.md")
READER = os.path.join(HERE, "reader.py")
STATES = ("pending", "running", "finished", "deleted")
V2_DATA = 12288                      # log.md: frames of a version-2 segment start here
SLOT_OFF = (4096, 8192)              # mark slot 0, slot 1

sys.path.insert(0, HERE)
import reader  # noqa: E402


class Fixture:
    """tests/fixtures/v<N>: store/ (never modified) and export.jsonl."""

    def __init__(self, version):
        self.version = version                       # the format version (format-spec/CHANGES.md)
        self.log_version = {1: 1, 2: 2, 5: 4, 6: 4, 7: 6, 8: 7, 9: 7, 10: 7, 11: 7}.get(version, 3)   # of the segments it was written with
        self.index_version = 4 if version >= 7 else 3 if version >= 6 else 2 if version >= 4 else 1
        self.dir = os.path.join(REPO, "tests", "fixtures", f"v{version}")
        self.store = os.path.join(self.dir, "store")
        with open(os.path.join(self.dir, "export.jsonl"), encoding="utf-8") as f:
            self.export_text = f.read()

    def export(self):
        """The fixture's jobs (its spider catalog lines left out)."""
        return jobs_only(parse_jsonl(self.export_text))

    def digest(self):
        h = hashlib.sha256()
        for base, dirs, files in sorted(os.walk(self.dir)):
            dirs.sort()
            for name in sorted(files):
                p = os.path.join(base, name)
                h.update(p.encode())
                with open(p, "rb") as fh:
                    h.update(fh.read())
        return h.hexdigest()


def versions(*vs):
    """Run a test against the fixtures of these format versions only; none: once, without a fixture."""
    def mark(f):
        f.versions = vs
        return f
    return mark


# --------------------------------------------------------------------------- running the reader

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


def parse_jsonl(text):
    """Lossless: numbers with a fraction are Decimals, big ints stay ints, objects keep field order."""
    return [json.loads(line, parse_float=decimal.Decimal, object_pairs_hook=list)
            for line in text.splitlines() if line.strip()]


def jobs_only(lines):
    """The job lines of an export (catalog lines, `{"spider_catalog": ...}`, left out)."""
    return [r for r in lines if r and r[0][0] != "spider_catalog"]


def key_of(r):
    return dict(r)["key"]


def export_of(store):
    rc, out, err = run_in(store, "export")
    assert rc == 0, f"export failed: {err}"
    return jobs_only(parse_jsonl(out))


def listing_from_export(records, project):
    """ts descending, ties by order_seq descending; export is in order_seq order within a project."""
    rows = [(dict(r), i) for i, r in enumerate(records) if dict(r)["project"] == project]
    rows.sort(key=lambda x: (x[0][x[0]["state"] + "_time"], x[1]), reverse=True)
    return [d["key"] for d, _ in rows]


def assert_export_without(fx, store, gone_keys, why):
    want = [r for r in fx.export() if key_of(r) not in gone_keys]
    got = export_of(store)
    assert got == want, f"{why}: export differs; got keys {[key_of(r) for r in got]}"
    assert len(fx.export()) - len(want) == len(gone_keys), f"{why}: {gone_keys} not all in the export"


def assert_corruption(store, cmds, seg, off, why):
    for cmd in cmds:
        rc, out, err = run_in(store, *cmd)
        assert rc == 1, f"{why}: {cmd} succeeded:\n{out}{err}"
        assert os.path.basename(seg) in err, f"{why}: {cmd}: error does not name the segment: {err}"
        assert f"offset {off}:" in err, f"{why}: {cmd}: error does not name offset {off}: {err}"
        assert "corruption" in err, f"{why}: {cmd}: {err}"


# --------------------------------------------------------------------------- files of a copy

def fresh_copy(tmp, fx, name="store"):
    dst = os.path.join(tmp, name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(fx.store, dst)
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


def remove_indexes(store):
    for p in index_files(store):
        os.remove(p)


def flip(path, offset, mask=0x5A):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def mcrc(b):
    c = zlib.crc32(b) & 0xFFFFFFFF
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- log segments (log.md)

def seg_header(path):
    """(version, number, generation, first_seq) of a segment file."""
    with open(path, "rb") as f:
        h = f.read(64)
    return struct.unpack_from("<IIQQ", h, 8)


def data_start(path):
    return 64 if seg_header(path)[0] == 1 else V2_DATA


def new_segment(version, number, generation, first_seq):
    """The bytes of a new, empty segment: the header, and for versions 2 and 3 the zero pad and mark
    pages."""
    head = b"JOBQLOG\0" + struct.pack("<IIQQ", version, number, generation, first_seq) + bytes(28)
    head += struct.pack("<I", mcrc(head))
    return head if version == 1 else head + bytes(V2_DATA - 64)


def set_header_field(path, offset, fmt, value):
    """Rewrite a segment header field and its CRC."""
    with open(path, "r+b") as f:
        h = bytearray(f.read(64))
        struct.pack_into(fmt, h, offset, value)
        h[60:64] = struct.pack("<I", mcrc(bytes(h[:60])))
        f.seek(0)
        f.write(h)


def slot_bytes(number, generation, epoch, end, next_seq):
    s = b"JOBQMRK\0" + struct.pack("<IIQQQQI", number, 0, generation, epoch, end, next_seq, 0)
    return s + struct.pack("<I", mcrc(s))


def read_slots(path):
    """[(epoch, durable_end, next_seq) or None] for slots 0 and 1: magic and CRC checked only."""
    with open(path, "rb") as f:
        data = f.read(V2_DATA)
    out = []
    for so in SLOT_OFF:
        s = data[so:so + 56]
        ok = len(s) == 56 and s[:8] == b"JOBQMRK\0" and struct.unpack_from("<I", s, 52)[0] == mcrc(s[:52])
        out.append(struct.unpack_from("<QQQ", s, 24) if ok else None)
    return out


def mark_of(path):
    """(durable_end, next_seq) of the newest slot, or None."""
    slots = [s for s in read_slots(path) if s]
    return max(slots)[1:] if slots else None


def set_mark(path, end, next_seq):
    """log.md, cutting below a mark: both slots rewritten with the new end (epochs e+1 and e+2)."""
    version, number, generation, _ = seg_header(path)
    assert version >= 2
    e = max([s[0] for s in read_slots(path) if s], default=0)
    for epoch in (e + 1, e + 2):
        patch(path, SLOT_OFF[epoch % 2], slot_bytes(number, generation, epoch, end, next_seq))


def _varint(body, p):
    v, i = 0, 0
    while True:
        c = body[p + i]
        v |= (c & 0x7F) << (7 * i)
        i += 1
        if not c & 0x80:
            return v, p + i


def decode_compact_body(body):
    """log.md, "Compact record"."""
    state, mask, flags, prev, oseq = struct.unpack_from("<BBBBQ", body, 0)
    p = 12
    project, p = _varint(body, p)
    spider, p = _varint(body, p)
    job, p = _varint(body, p)
    zz, p = _varint(body, p)
    prio = (zz >> 1) ^ -(zz & 1)
    times, last = [0, 0, 0, 0], None
    for i in range(4):
        if mask & (1 << i):
            u, p = _varint(body, p)
            last = times[i] = u if last is None else (last + ((u >> 1) ^ -(u & 1))) % (1 << 64)
    nt, p = _varint(body, p)
    tags = []
    for _ in range(nt):
        tl, p = _varint(body, p)
        tags.append(body[p:p + tl].decode())
        p += tl
    unique = None
    if flags & 1:
        ul, p = _varint(body, p)
        unique = body[p:p + ul].decode()
        p += ul
    return {"project": project, "spider": spider, "job": job, "state": state, "priority": prio,
            "order_seq": oseq, "ts": times[3 if state == 4 else state], "tags": tags, "unique": unique,
            "doc": body[p:].decode(), "key": f"{project}/{spider}/{job}", "prev": prev}


def decode_body(body):
    project, spider, job, state, mask, flags, prev, prio, oseq = struct.unpack_from("<IIIBBBBqQ", body, 0)
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
            "order_seq": oseq, "ts": times[3 if state == 4 else state], "tags": tags, "unique": unique,
            "doc": body[p + 4:p + 4 + dl].decode(), "key": f"{project}/{spider}/{job}", "prev": prev}


def raw_frames(path):
    """A minimal frame walk of one segment (lengths only, no validation), independent of reader.py."""
    with open(path, "rb") as f:
        data = f.read()
    seg = seg_header(path)[1]
    off, out = data_start(path), []
    while off + 32 <= len(data):
        ln, kind, flags, _, count, first_seq, durable = struct.unpack_from("<IBBHIQQ", data, off + 4)
        if kind == 0 and not data[off:].strip(b"\0"):
            break                       # a version-4 or 5 segment's preallocated zeros (log.md)
        end = off + 32 + ln
        if end > len(data):
            break
        recs, payload = [], data[off + 32:end]
        if kind == 1:
            p = off + 32
            for i in range(count):
                word = struct.unpack_from("<I", data, p)[0]
                bl = word & 0x7FFFFFFF
                r = (decode_compact_body if word & 0x80000000 else decode_body)(data[p + 8:p + 8 + bl])
                r.update(off=p, seq=first_seq + i, end=p + 8 + bl, seg=seg, path=path)
                recs.append(r)
                p += 8 + bl
        out.append({"seg": seg, "path": path, "off": off, "end": end, "kind": kind, "flags": flags,
                    "count": count, "first_seq": first_seq, "last_seq": first_seq + count - 1,
                    "durable_seq": durable, "recs": recs, "keys": [r["key"] for r in recs], "payload": payload})
        off = end
    return out


def log_frames(store):
    """Every frame of every segment, in log order."""
    return [f for p in segments(store) for f in raw_frames(p)]


def proved_durable(store):
    """The frames whose damage an open without index files must call corruption (durability.md
    rules 1 and 2): every frame of a segment before the last; in the last, for version 1 those a
    later frame claims durable (first_seq and durable_seq >= the frame's first_seq), for version 2
    those ending at or before the mark's durable_end."""
    segs = segments(store)
    frames = log_frames(store)
    last = seg_header(segs[-1])[1]
    mark = mark_of(segs[-1]) if seg_header(segs[-1])[0] >= 2 else None
    out = []
    for i, f in enumerate(frames):
        if f["seg"] != last:
            out.append(f)
        elif mark is not None:
            if f["end"] <= mark[0]:
                out.append(f)
        elif any(g["durable_seq"] >= f["first_seq"] and g["first_seq"] >= f["first_seq"] for g in frames[i + 1:]):
            out.append(f)
    return out


def frame_bytes(kind, flags, count, first_seq, durable_seq, payload):
    """A valid frame (log.md, frame header): masked CRC of header bytes 4..32 and the payload."""
    rest = struct.pack("<IBBHIQQ", len(payload), kind, flags, 0, count, first_seq, durable_seq) + payload
    return struct.pack("<I", mcrc(rest)) + rest


def spec_hex_blocks():
    """The hex dumps of log.md's worked example: [frame bytes, ...] of each code block."""
    with open(SPEC_LOG, encoding="utf-8") as f:
        text = f.read()
    blocks = text.split("## Worked example", 1)[1].split("```")[1::2]
    out = []
    for block in blocks:
        parts = []
        for line in block.splitlines():
            m = re.match(r"^([0-9a-f]{4}): ((?:[0-9a-f]{2} )*[0-9a-f]{2})", line)
            if m:
                if m.group(1) == "0000":
                    parts.append(bytearray())
                parts[-1] += bytes.fromhex(m.group(2).replace(" ", ""))
        out.append([bytes(p) for p in parts])
    return out


def split_log(store, at_seq, version=None):
    """Move the frames after sequence `at_seq` out of the last segment into a new last segment of the
    same version, or of `version` (layout.md, log.md). A version-2 or -3 segment gets the old one's mark
    moved with the bytes, or, after a version-1 one, a mark at its end (as a clean close leaves it),
    epoch 1 in slot 1; the old segment's mark is no longer read."""
    old = segments(store)[-1]
    old_version, number, generation, _ = seg_header(old)
    version = version or old_version
    frames = raw_frames(old)
    cut = [f for f in frames if f["last_seq"] == at_seq][0]["end"]
    with open(old, "rb") as f:
        data = f.read()
    head = bytearray(new_segment(version, number + 1, generation, at_seq + 1))
    if version >= 2:
        end, next_seq = mark_of(old) if old_version >= 2 else (len(data), frames[-1]["last_seq"] + 1)
        assert end >= cut
        head[SLOT_OFF[1]:SLOT_OFF[1] + 56] = slot_bytes(number + 1, generation, 1, end - cut + V2_DATA, next_seq)
    new = os.path.join(gen_dir(store), f"log-{number + 1:010d}.jql")
    with open(new, "wb") as f:
        f.write(bytes(head) + data[cut:])
    truncate(old, cut)
    return old, new, cut


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


def _posting_v3(docs):
    """index.md "Posting list", version 3: flat up to 8 docs; else containers, a bitmap (cut after
    its last non-zero word) when the cardinality is above 4 × its words."""
    if len(docs) <= 8:
        return struct.pack(f"<I{len(docs)}I", len(docs), *docs)
    blocks = {}
    for d in docs:
        blocks.setdefault(d >> 16, []).append(d & 0xFFFF)
    c = len(blocks)
    head, data = struct.pack("<II", len(docs), c), b""
    for blk, lows in sorted(blocks.items()):
        w = lows[-1] // 64 + 1
        if len(lows) > 4 * w:
            words = [0] * w
            for v in lows:
                words[v >> 6] |= 1 << (v & 63)
            kind, part = w, struct.pack(f"<{w}Q", *words)
        else:
            kind, part = 0, struct.pack(f"<{len(lows)}H", *lows)
        head += struct.pack("<HHII", blk, kind, len(lows), 8 + 12 * c + len(data))
        data += part
    return head + data


def _packed(vals):
    """index.md "Packed column": blocks of 128, each with the flat line (slope 0, base the smallest
    value) and residuals of the bit length of the largest."""
    blocks = [vals[i:i + 128] for i in range(0, len(vals), 128)]
    heads, data = b"", b""
    for blk in blocks:
        base = min(blk)
        width = max(v - base for v in blk).bit_length()
        bits = 0
        for j, v in enumerate(blk):
            bits |= (v - base) << (j * width)
        heads += struct.pack("<QqIB3x", base, 0, 24 * len(blocks) + len(data), width)
        data += bits.to_bytes((len(blk) * width + 7) // 8, "little")
    return heads + data


def _pad8(b):
    return b + b"\0" * (-len(b) % 8)


def _close_reason(doc):
    """index.md's close_reason term of a document (the fixtures hold compact values, so a
    non-string's JSON text is its compact dump)."""
    pairs = [v for k, v in json.loads(doc, object_pairs_hook=list, parse_float=decimal.Decimal)
             if k == "close_reason"]
    if not pairs:
        return None
    v = pairs[-1]
    term = v.encode() if isinstance(v, str) else json.dumps(v, separators=(",", ":")).encode()
    return term if len(term) <= 1024 else None


def _auth_token(doc):
    """index.md field 7: the last `auth` field's text, when a JSON string."""
    pairs = [v for k, v in json.loads(doc, object_pairs_hook=list) if k == "auth"]
    return pairs[-1].encode() if pairs and isinstance(pairs[-1], str) else None


def build_index(store, lo, hi, next_id_bump=0, version=1):
    """idx-<lo>-<hi>.jqi for the store's log (any number of segments), from format-spec/index.md;
    `version` 2 adds the close_reason lists (field 6); 3 packs the columns and the short lists."""
    frames = log_frames(store)
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
        if version >= 3:
            parts = [_packed(v) for v in ([r["ts"] for r in docs], [r["order_seq"] for r in docs],
                                          [r["spider"] for r in docs], [r["job"] for r in docs],
                                          [(r["seg"] << 32) | r["off"] for r in docs],
                                          [keys.index(k) for k in skeys])]
            offs = [72 + sum(len(p) for p in parts[:i]) for i in range(6)]
            cols = b"".join(parts)
        else:
            offs = [72 + 8 * n * i for i in range(6)]
            cols = struct.pack(f"<{n}Q", *[r["ts"] for r in docs]) + struct.pack(f"<{n}Q", *[r["order_seq"] for r in docs])
            cols += struct.pack(f"<{n}Q", *keys) + struct.pack(f"<{n}Q", *[(r["seg"] << 32) | r["off"] for r in docs])
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
            reason = _close_reason(r["doc"]) if version >= 2 else None
            if reason is not None:
                terms.setdefault((6, reason), []).append(d)
            token = _auth_token(r["doc"]) if version >= 3 and r["state"] == 1 else None
            if token is not None:
                terms.setdefault((7, token), []).append(d)
        order = sorted(terms)
        dict_off = len(_pad8(b"\0" * 72 + cols))
        blob = b"".join(t for _, t in order)
        entry_len, entry_fmt = (12, "<BBHII") if version >= 3 else (16, "<BBHIQ")
        post_off = len(_pad8(b"\0" * (dict_off + entry_len * len(order)) + blob))
        entries, posts, toff = b"", b"", 0
        for field, term in order:
            entries += struct.pack(entry_fmt, field, 0, len(term), toff, post_off + len(posts))
            toff += len(term)
            posts += (_posting_v3 if version >= 3 else _posting)(terms[(field, term)])
        head = struct.pack("<IIII7Q", project, n, len(order), 0, *offs, dict_off)
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
    generation = seg_header(segments(store)[0])[2]
    header = b"JOBQIDX\0" + struct.pack("<II6Q", version, 0, generation, lo, hi, (last["seg"] << 32) | last["end"],
                                        (last["seg"] << 32) | last["off"], sum(n for _, n, _ in sections))
    out[0:64] = header
    foot = struct.pack("<4QI", dir_off, len(directory), cat_off, len(cat), version)
    out += foot + struct.pack("<I", mcrc(header + directory + cat + foot)) + b"JOBQIDX\0"
    path = os.path.join(gen_dir(store), f"idx-{lo:016x}-{hi:016x}.jqi")
    with open(path, "wb") as f:
        f.write(out)
    return path
