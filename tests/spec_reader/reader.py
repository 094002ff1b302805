#!/usr/bin/env python3
"""Independent reader for the jobq on-disk format, version 1.

Written from format-spec/*.md alone (and checked against tests/fixtures/v1/), without
looking at jobq's code. Standard library only.

    python3 reader.py DIR export                  every live job, one JSON object a line
    python3 reader.py DIR list PROJECT            keys in listing order, from the index columns
    python3 reader.py DIR count PROJECT STATE [TAG]   from the index posting lists
    python3 reader.py DIR check                   validate everything; exit 0 when it does
    python3 reader.py DIR frames                  (debug) one JSON line per log frame

Exit codes: 0 ok; 1 damage (corruption, a damaged index file under `check`); 2 usage.
Read-only: never writes, never takes LOCK, never cuts a torn tail (durability.md rule 5).
"""

import decimal
import heapq
import json
import os
import re
import struct
import sys
import zlib

STATES = ("pending", "running", "finished", "deleted")
TIME_FIELDS = ("pending_time", "running_time", "finished_time", "deleted_time")
KIND_JOBS, KIND_SPIDER, KIND_CATALOG, KIND_COMMIT = 1, 2, 3, 4
KIND_NAMES = {1: "jobs", 2: "spider", 3: "catalog", 4: "commit"}
LOG_MAGIC = b"JOBQLOG\0"
IDX_MAGIC = b"JOBQIDX\0"
CUR_MAGIC = b"JOBQCUR\0"
VERSION = 1
MAX_FRAME_LEN = 1 << 30
SEG_HDR = 64
FRAME_HDR = 32
IDX_HDR = 64
IDX_FOOTER = 48
SECTION_HDR = 72
DICT_ENTRY = 16
FIELD_STATE, FIELD_SPIDER, FIELD_TAG, FIELD_PRIORITY, FIELD_UNIQUE = 1, 2, 3, 4, 5
FIELD_NAMES = {1: "state", 2: "spider", 3: "tag", 4: "priority", 5: "unique"}
# the metadata document never holds these (log.md); "*_time" read as the four times only
DOC_FORBIDDEN = {"key", "project", "spider", "state", "priority", "tags", "unique"} | set(TIME_FIELDS)

SEG_RE = re.compile(r"^log-(\d{10})\.jql$")
IDX_RE = re.compile(r"^idx-([0-9a-f]{16})-([0-9a-f]{16})\.jqi$")
GEN_RE = re.compile(r"^gen-([0-9a-f]{16})$")
_CANDIDATE = re.compile(rb"(?=.{8}[\x01-\x04][\x00\x01]\x00\x00)", re.DOTALL)


# --------------------------------------------------------------------------- basics

def masked_crc(*parts):
    """CRC-32/ISO-HDLC over the concatenation of parts, masked as LevelDB does."""
    c = 0
    for p in parts:
        c = zlib.crc32(p, c)
    c &= 0xFFFFFFFF
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def pack_pos(seg, off):
    return (seg << 32) | off


def unpack_pos(pos):
    return pos >> 32, pos & 0xFFFFFFFF


def fmt_pos(pos):
    s, o = unpack_pos(pos)
    return f"segment {s} offset {o}"


def align8(x):
    return (x + 7) & ~7


class Damage(Exception):
    """Bad bytes: names the file and the offset within it."""

    def __init__(self, path, offset, msg):
        super().__init__(msg)
        self.path, self.offset, self.msg = path, offset, msg

    def __str__(self):
        return f"{self.path}: offset {self.offset}: {self.msg}"


class Buf:
    """Bounds-checked little-endian reads of bytes that sit at file offset `base` of `path`."""

    __slots__ = ("d", "path", "base")

    def __init__(self, d, path, base=0):
        self.d, self.path, self.base = d, path, base

    def __len__(self):
        return len(self.d)

    def fail(self, off, msg):
        raise Damage(self.path, self.base + off, msg)

    def need(self, off, n, what):
        if off < 0 or n < 0 or off + n > len(self.d):
            avail = max(0, len(self.d) - off)
            self.fail(off, f"{what}: needs {n} bytes, only {avail} left")

    def un(self, fmt, off, what):
        self.need(off, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.d, off)

    def u8(self, off, what):
        return self.un("<B", off, what)[0]

    def u16(self, off, what):
        return self.un("<H", off, what)[0]

    def u32(self, off, what):
        return self.un("<I", off, what)[0]

    def u64(self, off, what):
        return self.un("<Q", off, what)[0]

    def raw(self, off, n, what):
        self.need(off, n, what)
        return self.d[off:off + n]

    def sub(self, off, n, what):
        return Buf(self.raw(off, n, what), self.path, self.base + off)

    def utf8(self, off, n, what):
        b = self.raw(off, n, what)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(off + e.start, f"{what}: invalid UTF-8")


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise Damage(path, 0, f"cannot read: {e.strerror or e}")


class _Obj(list):
    """A JSON object as its ordered (key, value) pairs."""


def _no_constant(name):
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def parse_json_object(text, buf, off, what):
    """Parse a JSON text that must be an object; numbers lossless."""
    try:
        v = json.loads(text, parse_float=decimal.Decimal, object_pairs_hook=_Obj,
                       parse_constant=_no_constant)
    except ValueError as e:
        buf.fail(off, f"{what}: not valid JSON: {e}")
    if not isinstance(v, _Obj):
        buf.fail(off, f"{what}: not a JSON object")
    return v


# --------------------------------------------------------------------------- CURRENT

def read_current(root):
    path = os.path.join(root, "CURRENT")
    if not os.path.exists(path):
        raise Damage(path, 0, "no CURRENT: the directory holds no store")
    b = Buf(read_file(path), path)
    if len(b) < 12 or b.raw(0, 8, "magic") != CUR_MAGIC:
        b.fail(0, "bad magic (expected \"JOBQCUR\\0\")")
    ver = b.u32(8, "version")
    if ver != VERSION:
        b.fail(8, f"unknown CURRENT version {ver} (this reader knows version {VERSION})")
    if len(b) != 32:
        b.fail(min(len(b), 32), f"CURRENT is {len(b)} bytes, must be 32")
    stored = b.u32(28, "crc")
    comp = masked_crc(b.d[0:28])
    if stored != comp:
        b.fail(28, f"CRC mismatch (stored 0x{stored:08x}, computed 0x{comp:08x})")
    if b.u32(12, "reserved") != 0:
        b.fail(12, "reserved field is not zero")
    if b.u32(24, "reserved") != 0:
        b.fail(24, "reserved field is not zero")
    return b.u64(16, "generation")


# --------------------------------------------------------------------------- log

class Frame:
    __slots__ = ("path", "seg", "off", "end", "kind", "flags", "count", "first_seq",
                 "durable_seq", "length", "payload")

    @property
    def pos(self):
        return pack_pos(self.seg, self.off)

    @property
    def last_seq(self):
        return self.first_seq + self.count - 1


class Record:
    """One job version (a record of a jobs frame)."""
    __slots__ = ("seq", "pos", "path", "file_off", "project", "spider", "job", "state", "mask",
                 "priority", "order_seq", "times", "tags", "unique", "doc_text")

    @property
    def key(self):
        return (self.project, self.spider, self.job)

    @property
    def ts(self):
        return self.times[self.state]

    @property
    def skey(self):
        return (self.spider << 32) | self.job


def decode_frame_header(data, off):
    """(fields, None) when the header decodes, the frame lies in the file and its CRC
    matches; (None, reason) otherwise. Sequence rules are checked by the caller."""
    if off + FRAME_HDR > len(data):
        return None, f"frame header needs {FRAME_HDR} bytes, only {len(data) - off} left in the file"
    crc, ln, kind, flags, res, count, first_seq, durable = struct.unpack_from("<IIBBHIQQ", data, off)
    if kind not in KIND_NAMES:
        return None, f"unknown frame kind {kind}"
    if flags & ~1:
        return None, f"reserved frame flag bits set (flags 0x{flags:02x})"
    if res:
        return None, "reserved frame header field is not zero"
    if count < 1:
        return None, "frame count is 0"
    if kind != KIND_JOBS and count != 1:
        return None, f"{KIND_NAMES[kind]} frame with count {count} (must be 1)"
    if ln > MAX_FRAME_LEN:
        return None, f"frame length {ln} exceeds 2^30"
    if off + FRAME_HDR + ln > len(data):
        return None, f"frame of {FRAME_HDR + ln} bytes runs past the end of the file ({len(data) - off} left)"
    comp = masked_crc(data[off + 4:off + FRAME_HDR + ln])
    if comp != crc:
        return None, f"frame CRC mismatch (stored 0x{crc:08x}, computed 0x{comp:08x})"
    return (ln, kind, flags, count, first_seq, durable), None


def parse_catalog_entries(b, what):
    """u32 n, then n x (u32 project, u32 spider, u32 next job id, u16 len, name); exactly."""
    n = b.u32(0, f"{what} entry count")
    off = 4
    out = []
    for i in range(n):
        project, spider, nxt = b.un("<III", off, f"{what} entry {i}")
        nl = b.u16(off + 12, f"{what} entry {i} name length")
        name = b.utf8(off + 14, nl, f"{what} entry {i} name")
        if project < 1 or spider < 1:
            b.fail(off, f"{what} entry {i}: project and spider ids must be >= 1")
        out.append((project, spider, nxt, name, off))
        off += 14 + nl
    if off != len(b):
        b.fail(off, f"{what}: {len(b) - off} bytes after the last entry")
    return out


class Log:
    """Every segment of the live generation, validated frame by frame."""

    def __init__(self, gen_dir, generation, seg_numbers):
        self.gen_dir = gen_dir
        self.generation = generation
        self.seg_numbers = seg_numbers
        self.seg_paths = {}
        self.seg_sizes = {}
        self.first_seq = None
        self.next_seq = None          # one past the last valid (kept) sequence number
        self.frames = []              # applied (committed) frames, in log order
        self.frame_at = {}            # packed pos -> Frame
        self.records = []             # applied job records in sequence order
        self.record_at = {}           # packed pos of body_len -> Record
        self.spider_events = []       # (seq, kind, data) in sequence order, for catalog snapshots
        self.torn = None              # (path, offset, reason) of a torn tail
        self.cut_txn = None           # (path, offset, first_seq) of an open transaction cut back
        self.notes = []
        # spider state as the log is applied
        self.spiders = {}             # (project, spider) -> name
        self.spider_ids = {}          # (project, name) -> spider
        self.max_job = {}             # (project, spider) -> highest job id seen
        self.catalog_next = {}        # (project, spider) -> "next job id" from catalog frames

    # ---- walking

    def read(self):
        segs = self.seg_numbers
        if not segs:
            raise Damage(self.gen_dir, 0, "the generation holds no log segment")
        if segs != list(range(1, len(segs) + 1)):
            missing = sorted(set(range(1, segs[-1] + 1)) - set(segs))
            raise Damage(self.gen_dir, 0, f"log segments are not contiguous from 1: missing {missing}")
        expected = None
        txn = None                    # dict: first_seq, frames, path, off
        stop = False
        for i, n in enumerate(segs):
            last = i == len(segs) - 1
            path = os.path.join(self.gen_dir, f"log-{n:010d}.jql")
            self.seg_paths[n] = path
            data = read_file(path)
            self.seg_sizes[n] = len(data)
            first = self._segment_header(path, n, data)
            if expected is None:
                if first < 1:
                    raise Damage(path, 24, "first sequence number of the log is 0")
                expected = first
                self.first_seq = first
            elif first != expected:
                raise Damage(path, 24, f"segment header says the first sequence number is {first}, "
                                       f"the previous segment ended before {expected}")
            off = SEG_HDR
            while off < len(data):
                fields, why = decode_frame_header(data, off)
                if fields is not None:
                    ln, kind, flags, count, first_seq, durable = fields
                    if first_seq != expected:
                        why = f"frame first_seq {first_seq}, expected {expected}"
                    else:
                        why = self._txn_rule(kind, flags, txn, data, off, path)
                if why is not None:
                    self._bad_frame(path, n, data, off, expected, why, last)
                    stop = True          # torn tail (the call raises on corruption)
                    break
                fr = Frame()
                fr.path, fr.seg, fr.off, fr.end = path, n, off, off + FRAME_HDR + ln
                fr.kind, fr.flags, fr.count, fr.first_seq, fr.durable_seq, fr.length = \
                    kind, flags, count, first_seq, durable, ln
                fr.payload = self._decode_payload(fr, data)
                if flags & 1:
                    if txn is None:
                        txn = {"first_seq": first_seq, "frames": [], "path": path, "off": off}
                    txn["frames"].append(fr)
                elif kind == KIND_COMMIT:
                    for f in txn["frames"]:
                        self._apply(f)
                    self._apply(fr)
                    txn = None
                else:
                    self._apply(fr)
                expected += count
                off = fr.end
            if stop:
                break
        if txn is not None:
            # durability.md rule 3: an import still open at the end is cut back to its first frame
            self.cut_txn = (txn["path"], txn["off"], txn["first_seq"])
            expected = txn["first_seq"]
        self.next_seq = expected

    def _segment_header(self, path, n, data):
        b = Buf(data, path)
        if len(data) < SEG_HDR:
            b.fail(0, f"segment is {len(data)} bytes, shorter than its {SEG_HDR}-byte header")
        if b.raw(0, 8, "magic") != LOG_MAGIC:
            b.fail(0, "bad magic (expected \"JOBQLOG\\0\")")
        ver = b.u32(8, "version")
        if ver != VERSION:
            b.fail(8, f"unknown log segment version {ver} (this reader knows version {VERSION})")
        stored = b.u32(60, "crc")
        comp = masked_crc(data[0:60])
        if stored != comp:
            b.fail(60, f"segment header CRC mismatch (stored 0x{stored:08x}, computed 0x{comp:08x})")
        if any(data[32:60]):
            b.fail(32, "reserved bytes of the segment header are not zero")
        num = b.u32(12, "segment number")
        if num != n:
            b.fail(12, f"segment number {num} does not match the file name ({n})")
        gen = b.u64(16, "generation")
        if gen != self.generation:
            b.fail(16, f"segment generation {gen} does not match its directory ({self.generation})")
        return b.u64(24, "first sequence number")

    def _txn_rule(self, kind, flags, txn, data, off, path):
        """log.md, import transactions: reason this frame is invalid, or None."""
        flagged = flags & 1
        if kind == KIND_COMMIT:
            if flagged:
                return "commit frame carries the transaction flag"
            if txn is None:
                return "commit frame outside an import transaction"
            ln = struct.unpack_from("<I", data, off + 4)[0]
            if ln != 8:
                raise Damage(path, off, f"commit frame payload is {ln} bytes, must be 8")
            first = struct.unpack_from("<Q", data, off + FRAME_HDR)[0]
            if first != txn["first_seq"]:
                return f"commit names first sequence {first}, the open transaction began at {txn['first_seq']}"
            return None
        if txn is not None and not flagged:
            return f"frame without the transaction flag inside an open transaction (began at sequence {txn['first_seq']})"
        return None

    def _bad_frame(self, path, n, data, off, expected, why, last):
        """durability.md recovery rules 1, 2 and 4 for a read-only open."""
        if not last:
            raise Damage(path, off, f"corruption: bad frame in a segment that is not the last: {why}")
        # Rule 2: is there a later valid frame in this segment that claims durable_seq >= expected?
        # candidates: a known kind, flags 0 or 1 and a zero reserved u16 at header bytes 8..12
        for m in _CANDIDATE.finditer(data, off + 1):
            o = m.start()
            fields, bad = decode_frame_header(data, o)
            if fields is not None and fields[5] >= expected:
                raise Damage(path, off, f"corruption: bad frame ({why}) although the valid frame at offset {o} "
                                        f"(first_seq {fields[4]}) says sequence {fields[5]} >= {expected} was durable")
        self.torn = (path, off, why)

    def _decode_payload(self, fr, data):
        """A frame whose CRC matches but whose payload does not decode is corruption."""
        b = Buf(data[fr.off + FRAME_HDR:fr.end], fr.path, fr.off + FRAME_HDR)
        if fr.kind == KIND_JOBS:
            recs = []
            off = 0
            for i in range(fr.count):
                bl = b.u32(off, f"record {i} body_len")
                body = b.sub(off + 4, bl, f"record {i} body")
                r = self._decode_record(body)
                r.seq = fr.first_seq + i
                r.pos = pack_pos(fr.seg, fr.off + FRAME_HDR + off)
                r.path, r.file_off = fr.path, fr.off + FRAME_HDR + off
                recs.append(r)
                off += 4 + bl
            if off != len(b):
                b.fail(off, f"jobs payload: {len(b) - off} bytes after its {fr.count} records")
            return recs
        if fr.kind == KIND_SPIDER:
            project, spider = b.un("<II", 0, "spider registration")
            nl = b.u16(8, "spider name length")
            name = b.utf8(10, nl, "spider name")
            if 10 + nl != len(b):
                b.fail(10 + nl, f"spider payload: {len(b) - 10 - nl} bytes after the name")
            if project < 1 or spider < 1:
                b.fail(0, "spider registration: project and spider ids must be >= 1")
            return (project, spider, name)
        if fr.kind == KIND_CATALOG:
            return parse_catalog_entries(b, "catalog frame")
        # commit
        if len(b) != 8:
            b.fail(0, f"commit payload is {len(b)} bytes, must be 8")
        return b.u64(0, "commit")

    def _decode_record(self, b):
        r = Record()
        project, spider, job = b.un("<III", 0, "record key")
        state, mask, flags, res = b.un("<BBBB", 12, "record state")
        priority, order_seq = b.un("<qQ", 16, "record priority")
        times = b.un("<4Q", 32, "record times")
        if project < 1 or spider < 1 or job < 1:
            b.fail(0, f"record key {project}/{spider}/{job}: ids must be >= 1")
        if state > 3:
            b.fail(12, f"record state {state} is unknown")
        if mask & ~0x0F:
            b.fail(13, f"record times mask 0x{mask:02x} has bits beyond 0..3")
        if not mask & (1 << state):
            b.fail(13, f"record times mask 0x{mask:02x} lacks the bit of its state ({STATES[state]})")
        if flags & ~1:
            b.fail(14, f"record flags 0x{flags:02x} have reserved bits set")
        if res:
            b.fail(15, "record reserved byte is not zero")
        for i in range(4):
            if not mask & (1 << i) and times[i] != 0:
                b.fail(32 + 8 * i, f"{TIME_FIELDS[i]} is {times[i]} but its mask bit is clear")
        ntags = b.u16(64, "record tag count")
        off = 66
        tags = []
        for i in range(ntags):
            tl = b.u16(off, f"tag {i} length")
            tags.append(b.utf8(off + 2, tl, f"tag {i}"))
            off += 2 + tl
        unique = None
        if flags & 1:
            ul = b.u16(off, "unique length")
            unique = b.utf8(off + 2, ul, "unique")
            off += 2 + ul
        dl = b.u32(off, "metadata document length")
        doc_off = off + 4
        doc = b.utf8(doc_off, dl, "metadata document")
        off = doc_off + dl
        if off != len(b):
            b.fail(off, f"record body: {len(b) - off} bytes after the metadata document")
        obj = parse_json_object(doc, b, doc_off, "metadata document")
        for k, _ in obj:
            if k in DOC_FORBIDDEN:
                b.fail(doc_off, f"metadata document holds the field {k!r}, which the record holds itself")
        r.project, r.spider, r.job = project, spider, job
        r.state, r.mask, r.priority, r.order_seq = state, mask, priority, order_seq
        r.times, r.tags, r.unique, r.doc_text = times, tags, unique, doc
        return r

    # ---- applying committed frames

    def _register(self, fr, project, spider, name, from_catalog):
        k = (project, spider)
        old = self.spiders.get(k)
        if old is not None:
            if old != name:
                raise Damage(fr.path, fr.off, f"spider {project}/{spider} registered as {name!r}, "
                                              f"it was {old!r} (a name maps to one id for the life of the store)")
            return
        other = self.spider_ids.get((project, name))
        if other is not None:
            raise Damage(fr.path, fr.off, f"spider name {name!r} of project {project} registered as id {spider}, "
                                          f"it already has id {other}")
        if not from_catalog:
            expect = 1 + max([s for (p, s) in self.spiders if p == project], default=0)
            if spider != expect:
                raise Damage(fr.path, fr.off, f"spider id {spider} of project {project} registered; ids are "
                                              f"allocated from 1 upward, the next is {expect}")
        self.spiders[k] = name
        self.spider_ids[(project, name)] = spider

    def _apply(self, fr):
        self.frames.append(fr)
        self.frame_at[fr.pos] = fr
        if fr.kind == KIND_JOBS:
            for r in fr.payload:
                if (r.project, r.spider) not in self.spiders:
                    raise Damage(r.path, r.file_off, f"record {r.project}/{r.spider}/{r.job} names spider "
                                                     f"{r.spider} of project {r.project}, which is not registered")
                if r.order_seq > r.seq:
                    raise Damage(r.path, r.file_off + 4 + 24,
                                 f"order_seq {r.order_seq} is after the record's own sequence number {r.seq}")
                self.records.append(r)
                self.record_at[r.pos] = r
                k = (r.project, r.spider)
                self.max_job[k] = max(self.max_job.get(k, 0), r.job)
                self.spider_events.append((r.seq, "job", (r.project, r.spider, r.job)))
        elif fr.kind == KIND_SPIDER:
            project, spider, name = fr.payload
            self._register(fr, project, spider, name, False)
            self.spider_events.append((fr.first_seq, "spider", (project, spider, name)))
        elif fr.kind == KIND_CATALOG:
            for project, spider, nxt, name, _ in fr.payload:
                self._register(fr, project, spider, name, True)
                k = (project, spider)
                self.catalog_next[k] = max(self.catalog_next.get(k, 0), nxt)
                self.spider_events.append((fr.first_seq, "catalog", (project, spider, nxt, name)))

    # ---- views

    def catalog_at(self, seq):
        """{(project, spider): (name, next job id)} as known at sequence number `seq`.
        Next job id read as max(catalog value, highest job id + 1) (log.md is ambiguous)."""
        names, maxjob, cnext = {}, {}, {}
        for s, kind, d in self.spider_events:
            if s > seq:
                break
            if kind == "spider":
                names[(d[0], d[1])] = d[2]
            elif kind == "catalog":
                names[(d[0], d[1])] = d[3]
                cnext[(d[0], d[1])] = max(cnext.get((d[0], d[1]), 0), d[2])
            else:
                k = (d[0], d[1])
                maxjob[k] = max(maxjob.get(k, 0), d[2])
        return {k: (n, max(cnext.get(k, 0), maxjob.get(k, 0) + 1)) for k, n in names.items()}

    def pos_after(self, fr):
        return pack_pos(fr.seg, fr.end)


# --------------------------------------------------------------------------- index files

class Posting:
    """A decoded posting list: sorted doc ids."""
    __slots__ = ("docs", "start", "end")


def decode_posting(sec, off, n_docs, what):
    """Roaring-style posting list at section offset `off`. Returns Posting."""
    card, c = sec.un("<II", off, f"{what} header")
    dir_end = off + 8 + 12 * c
    sec.need(off, 8 + 12 * c, f"{what} container directory")
    docs = []
    total = 0
    prev_block = -1
    end = dir_end
    expect_data = dir_end
    for i in range(c):
        eo = off + 8 + 12 * i
        block, kind, ccard, doff = sec.un("<HHII", eo, f"{what} container {i}")
        if block <= prev_block:
            sec.fail(eo, f"{what}: container blocks not strictly ascending ({prev_block} then {block})")
        prev_block = block
        if ccard < 1:
            sec.fail(eo, f"{what}: empty container")
        base = block << 16
        dpos = off + doff
        if dpos != expect_data:
            sec.fail(eo + 8, f"{what}: container {i} data at offset {doff}, expected {expect_data - off} "
                             f"(data follows container after container)")
        if kind == 0:
            if ccard > 4096:
                sec.fail(eo, f"{what}: array container with cardinality {ccard} > 4096")
            vals = sec.un(f"<{ccard}H", dpos, f"{what} array container {i}")
            for j in range(1, ccard):
                if vals[j] <= vals[j - 1]:
                    sec.fail(dpos + 2 * j, f"{what}: array container not strictly ascending")
            docs.extend(base + v for v in vals)
            expect_data = dpos + 2 * ccard
        elif kind == 1:
            if ccard <= 4096:
                sec.fail(eo, f"{what}: bitmap container with cardinality {ccard} <= 4096")
            words = sec.un("<1024Q", dpos, f"{what} bitmap container {i}")
            cnt = 0
            for w, word in enumerate(words):
                while word:
                    low = word & -word
                    docs.append(base + (w << 6) + low.bit_length() - 1)
                    word ^= low
                    cnt += 1
            if cnt != ccard:
                sec.fail(eo, f"{what}: bitmap container holds {cnt} docs, its cardinality says {ccard}")
            expect_data = dpos + 8192
        else:
            sec.fail(eo + 2, f"{what}: unknown container kind {kind}")
        total += ccard
        end = max(end, expect_data)
    if total != card:
        sec.fail(off, f"{what}: containers hold {total} docs, the list's cardinality says {card}")
    if docs and docs[-1] >= n_docs:
        sec.fail(off, f"{what}: doc {docs[-1]} is past the section's {n_docs} docs")
    p = Posting()
    p.docs, p.start, p.end = docs, off, end
    return p


class Section:
    __slots__ = ("project", "n", "offset", "length", "ts", "seq", "key", "loc", "sorted_keys",
                 "by_key", "terms", "key_to_doc")


def decode_section(b, project, n_docs, path, file_off):
    """A project's section; b is a Buf over exactly the section's bytes."""
    what = f"section of project {project}"
    proj, n, t, z = b.un("<IIII", 0, f"{what} header")
    offs = b.un("<7Q", 16, f"{what} header")
    if proj != project:
        b.fail(0, f"{what}: section header names project {proj}")
    if n != n_docs:
        b.fail(4, f"{what}: section header says {n} docs, its directory entry {n_docs}")
    if z != 0:
        b.fail(12, f"{what}: reserved field is not zero")
    names = ("ts", "seq", "key", "loc", "sorted keys", "by_key")
    cols = []
    for i, name in enumerate(names):
        width = 4 if name == "by_key" else 8
        o = offs[i]
        if o < SECTION_HDR or o + width * n > len(b):
            b.fail(16 + 8 * i, f"{what}: {name} column [{o}, {o + width * n}) is not inside the section "
                               f"[{SECTION_HDR}, {len(b)})")
        cols.append(b.un(f"<{n}{'I' if width == 4 else 'Q'}", o, f"{what} {name} column"))
    ts, seq, key, loc, skeys, by_key = cols
    s = Section()
    s.project, s.n, s.ts, s.seq, s.key, s.loc, s.sorted_keys, s.by_key = project, n, ts, seq, key, loc, skeys, by_key
    # docs in listing order: (ts, order_seq) strictly descending
    for d in range(1, n):
        if (ts[d], seq[d]) >= (ts[d - 1], seq[d - 1]):
            b.fail(offs[0] + 8 * d, f"{what}: docs {d - 1} and {d} are not in listing order "
                                    f"((ts, seq) ({ts[d - 1]}, {seq[d - 1]}) then ({ts[d]}, {seq[d]}))")
    for i in range(n):
        if i and skeys[i] <= skeys[i - 1]:
            b.fail(offs[4] + 8 * i, f"{what}: sorted keys not strictly ascending at {i}")
        d = by_key[i]
        if d >= n or key[d] != skeys[i]:
            b.fail(offs[5] + 4 * i, f"{what}: by_key[{i}] = {d} does not hold sorted key 0x{skeys[i]:016x}")
    s.key_to_doc = {skeys[i]: by_key[i] for i in range(n)}
    for d in range(n):
        if key[d] >> 32 == 0 or key[d] & 0xFFFFFFFF == 0:
            b.fail(offs[2] + 8 * d, f"{what}: doc {d} key has a zero spider or job id")
    # term dictionary
    do = offs[6]
    if do < SECTION_HDR or do + DICT_ENTRY * t > len(b):
        b.fail(64, f"{what}: term dictionary of {t} entries at {do} is not inside the section")
    blob_off = do + DICT_ENTRY * t
    entries = []
    blob_len = 0
    for i in range(t):
        eo = do + DICT_ENTRY * i
        field, zero, tl, toff, poff = b.un("<BBHIQ", eo, f"{what} dictionary entry {i}")
        if field not in FIELD_NAMES:
            b.fail(eo, f"{what}: dictionary entry {i} has unknown field {field}")
        if zero:
            b.fail(eo + 1, f"{what}: dictionary entry {i} reserved byte is not zero")
        if toff != blob_len:
            b.fail(eo + 4, f"{what}: dictionary entry {i} term offset {toff}, expected {blob_len} "
                           f"(terms are concatenated in entry order)")
        blob_len += tl
        entries.append((field, tl, toff, poff, eo))
    b.need(blob_off, blob_len, f"{what} term blob")
    terms = {}
    prev = None
    prev_end = align8(blob_off + blob_len)
    for i, (field, tl, toff, poff, eo) in enumerate(entries):
        term = b.raw(blob_off + toff, tl, f"{what} term {i}")
        k = (field, term)
        if prev is not None and k <= prev:
            b.fail(eo, f"{what}: dictionary not in (field, term bytes) order at entry {i}")
        prev = k
        tw = f"{what} {FIELD_NAMES[field]} term {term!r}"
        if field == FIELD_STATE and (tl != 1 or term[0] > 3):
            b.fail(blob_off + toff, f"{tw}: a state term is one byte 0..3")
        if field == FIELD_SPIDER and tl != 4:
            b.fail(blob_off + toff, f"{tw}: a spider term is a u32")
        if field == FIELD_PRIORITY and tl != 8:
            b.fail(blob_off + toff, f"{tw}: a priority term is an i64")
        if field in (FIELD_TAG, FIELD_UNIQUE):
            b.utf8(blob_off + toff, tl, tw)
        if poff < prev_end:
            b.fail(eo + 8, f"{tw}: posting list at {poff} overlaps what precedes it (ends at {prev_end})")
        p = decode_posting(b, poff, n, f"{tw} posting list")
        prev_end = p.end
        terms[k] = p
    s.terms = terms
    # every doc in exactly one list of its state, spider and priority
    for field in (FIELD_STATE, FIELD_SPIDER, FIELD_PRIORITY):
        seen = [0] * n
        for (f, _), p in terms.items():
            if f == field:
                for d in p.docs:
                    seen[d] += 1
        for d in range(n):
            if seen[d] != 1:
                b.fail(do, f"{what}: doc {d} is in {seen[d]} {FIELD_NAMES[field]} posting lists, must be 1")
    return s


class IndexFile:
    def __init__(self, path, name_lo, name_hi):
        self.path, self.name_lo, self.name_hi = path, name_lo, name_hi
        self.damage = None        # Damage: not usable
        self.stale = None         # str: valid but not matching the log / not in the chain
        self.sections = {}        # project -> Section
        self.catalog = []
        self.size = 0

    def fname(self):
        return os.path.basename(self.path)


def load_index(path, name_lo, name_hi, generation):
    ix = IndexFile(path, name_lo, name_hi)
    try:
        _load_index(ix, generation)
    except Damage as e:
        ix.damage = e
    return ix


def _load_index(ix, generation):
    data = read_file(ix.path)
    ix.size = len(data)
    b = Buf(data, ix.path)
    if len(data) < IDX_HDR + IDX_FOOTER:
        b.fail(0, f"index file is {len(data)} bytes, less than header + footer ({IDX_HDR + IDX_FOOTER})")
    if b.raw(0, 8, "magic") != IDX_MAGIC:
        b.fail(0, "bad header magic (expected \"JOBQIDX\\0\")")
    fo = len(data) - IDX_FOOTER
    if b.raw(fo + 40, 8, "footer magic") != IDX_MAGIC:
        b.fail(fo + 40, "bad footer magic (expected \"JOBQIDX\\0\")")
    ver = b.u32(8, "version")
    if ver != VERSION:
        b.fail(8, f"unknown index version {ver} (this reader knows version {VERSION})")
    fver = b.u32(fo + 32, "footer version")
    if fver != VERSION:
        b.fail(fo + 32, f"unknown index footer version {fver} (this reader knows version {VERSION})")
    dir_off, dir_len, cat_off, cat_len = b.un("<4Q", fo, "footer")
    # directory and catalog must lie between the header and the footer before the CRC can be computed
    for name, o, ln, fld in (("directory", dir_off, dir_len, fo), ("catalog", cat_off, cat_len, fo + 16)):
        if o < IDX_HDR or o + ln > fo:
            b.fail(fld, f"{name} [{o}, {o + ln}) is not between the header and the footer")
        if o % 8:
            b.fail(fld, f"{name} offset {o} is not 8-aligned")
    stored = b.u32(fo + 36, "footer crc")
    comp = masked_crc(data[0:IDX_HDR], data[dir_off:dir_off + dir_len], data[cat_off:cat_off + cat_len],
                      data[fo:fo + 36])
    if stored != comp:
        b.fail(fo + 36, f"footer CRC mismatch (stored 0x{stored:08x}, computed 0x{comp:08x})")
    z, gen, lo, hi, log_end, last_frame, ndocs = b.un("<I6Q", 12, "header")
    if z:
        b.fail(12, "reserved header field is not zero")
    if gen != generation:
        b.fail(16, f"index built from generation {gen}, it sits in generation {generation}")
    if lo < 1 or hi < lo:
        b.fail(24, f"bad range lo_seq {lo}, hi_seq {hi}")
    if (lo, hi) != (ix.name_lo, ix.name_hi):
        b.fail(24, f"header range {lo}..{hi} does not match the file name "
                   f"({ix.name_lo}..{ix.name_hi})")
    ix.generation, ix.lo, ix.hi, ix.log_end, ix.last_frame, ix.ndocs = gen, lo, hi, log_end, last_frame, ndocs
    # catalog: the same encoding as a catalog frame
    ix.catalog = parse_catalog_entries(b.sub(cat_off, cat_len, "catalog"), "index catalog")
    seen = set()
    for project, spider, nxt, name, o in ix.catalog:
        if (project, spider) in seen:
            b.fail(cat_off + o, f"index catalog lists spider {project}/{spider} twice")
        seen.add((project, spider))
    # directory
    n = b.u32(dir_off, "directory count")
    if b.u32(dir_off + 4, "directory reserved") != 0:
        b.fail(dir_off + 4, "directory reserved field is not zero")
    if dir_len != 8 + 32 * n:
        b.fail(fo + 8, f"directory length {dir_len} does not fit {n} entries ({8 + 32 * n})")
    parts = []     # (offset, end, what) of every part after the header, to check gaps
    prev_project = 0
    prev_end = IDX_HDR
    total = 0
    entries = []
    for i in range(n):
        eo = dir_off + 8 + 32 * i
        project, docs, soff, slen, scrc, z = b.un("<IIQQII", eo, f"directory entry {i}")
        if project <= prev_project:
            b.fail(eo, f"directory entry {i}: project {project} not in ascending order")
        prev_project = project
        if docs < 1:
            b.fail(eo + 4, f"directory entry {i}: section with no docs")
        if z:
            b.fail(eo + 28, f"directory entry {i}: reserved field is not zero")
        if soff % 8:
            b.fail(eo + 8, f"directory entry {i}: section offset {soff} is not 8-aligned")
        if soff < prev_end or soff + slen > fo:
            b.fail(eo + 8, f"directory entry {i}: section [{soff}, {soff + slen}) is not inside the file "
                           f"after the previous part (which ends at {prev_end})")
        prev_end = soff + slen
        comp = masked_crc(data[soff:soff + slen])
        if comp != scrc:
            b.fail(eo + 24, f"section of project {project} [{soff}, {soff + slen}): CRC mismatch "
                            f"(stored 0x{scrc:08x}, computed 0x{comp:08x})")
        entries.append((project, docs, soff, slen))
        parts.append((soff, soff + slen, f"section of project {project}"))
        total += docs
    if total != ndocs:
        b.fail(56, f"header says {ndocs} docs, the directory {total}")
    parts += [(cat_off, cat_off + cat_len, "catalog"), (dir_off, dir_off + dir_len, "directory"),
              (fo, len(data), "footer")]
    # file layout: header, sections, catalog, directory, footer; gaps are zero padding
    pos = IDX_HDR
    for start, end, what in parts:
        if start < pos:
            b.fail(start, f"{what} overlaps the part before it or is out of order "
                          "(header, sections, catalog, directory, footer)")
        if any(data[pos:start]):
            b.fail(pos + next(i for i, x in enumerate(data[pos:start]) if x),
                   f"non-zero byte in the padding before the {what}")
        pos = end
    for project, docs, soff, slen in entries:
        ix.sections[project] = decode_section(Buf(data[soff:soff + slen], ix.path, soff),
                                              project, docs, ix.path, soff)


# --------------------------------------------------------------------------- the store

class Store:
    def __init__(self, root):
        self.root = root
        self.notes = []
        self.generation = read_current(root)
        self.gen_dir = os.path.join(root, f"gen-{self.generation:016x}")
        if not os.path.isdir(self.gen_dir):
            raise Damage(os.path.join(root, "CURRENT"), 16,
                         f"CURRENT names generation {self.generation}, but {self.gen_dir} does not exist")
        for e in sorted(os.listdir(root)):
            m = GEN_RE.match(e)
            if m and int(m.group(1), 16) != self.generation:
                self.notes.append(f"leftover generation directory {e} ignored (CURRENT names {self.generation})")
        segs, idxs = [], []
        for e in sorted(os.listdir(self.gen_dir)):
            m = SEG_RE.match(e)
            if m:
                segs.append(int(m.group(1)))
                continue
            m = IDX_RE.match(e)
            if m:
                idxs.append((e, int(m.group(1), 16), int(m.group(2), 16)))
                continue
            if e.endswith(".tmp"):
                self.notes.append(f"temp file {e} ignored")
            else:
                self.notes.append(f"unknown file {e} ignored")
        self.log = Log(self.gen_dir, self.generation, sorted(segs))
        self.log.read()                       # raises Damage on corruption
        self.indexes = [load_index(os.path.join(self.gen_dir, e), lo, hi, self.generation)
                        for e, lo, hi in idxs]
        self._chain()
        self._verify_chain_contents()
        self._replay()

    # index.md, "Matching index files to the log", steps 2..4
    def _matches_log(self, ix):
        fr = self.log.frame_at.get(ix.last_frame)
        if fr is None:
            return f"the log holds no valid frame at last_frame ({fmt_pos(ix.last_frame)})"
        if fr.last_seq != ix.hi:
            return f"the frame at last_frame ({fmt_pos(ix.last_frame)}) ends at sequence {fr.last_seq}, not hi_seq {ix.hi}"
        if self.log.pos_after(fr) != ix.log_end:
            return (f"the frame at last_frame ends at {fmt_pos(self.log.pos_after(fr))}, "
                    f"not at log_end ({fmt_pos(ix.log_end)})")
        return None

    def _chain(self):
        usable = []
        for ix in self.indexes:
            if ix.damage is not None:
                continue
            why = self._matches_log(ix)
            if why:
                ix.stale = why
            else:
                usable.append(ix)
        chain = []
        nxt = self.log.first_seq
        while True:
            cands = [ix for ix in usable if ix.lo == nxt]
            if not cands:
                break
            best = max(cands, key=lambda ix: ix.hi)
            chain.append(best)
            nxt = best.hi + 1
        for ix in usable:
            if ix not in chain:
                ix.stale = "not in the chain (superseded by a file covering more, or not reachable from the log's start)"
        self.chain = chain

    def _verify_chain_contents(self):
        """Beyond index.md's check list: each chain file must hold exactly the newest version of
        each job of its range, agreeing with the log record at `loc`, and its catalog must be the
        log's at hi_seq. A file that does not is treated as damaged, and the chain is built again
        without it."""
        verified = set()
        while True:
            failed = False
            for ix in self.chain:
                if id(ix) in verified:
                    continue
                try:
                    self._verify_contents(ix)
                    verified.add(id(ix))
                except Damage as e:
                    ix.damage = e
                    failed = True
            if not failed:
                return
            for ix in self.indexes:
                if ix.damage is None:
                    ix.stale = None
            self._chain()

    def _verify_contents(self, ix):
        newest = {}
        for r in self.log.records:
            if r.seq > ix.hi:
                break
            if r.seq >= ix.lo:
                newest[r.key] = r
        keys_by_project = {}
        for k in newest:
            keys_by_project.setdefault(k[0], set()).add(k)
        if set(keys_by_project) != set(ix.sections):
            raise Damage(ix.path, 0, f"sections for projects {sorted(ix.sections)}, the log's range "
                                     f"{ix.lo}..{ix.hi} has jobs of projects {sorted(keys_by_project)}")
        for project, s in ix.sections.items():
            if len(keys_by_project[project]) != s.n:
                raise Damage(ix.path, 0, f"project {project}: {s.n} docs, the log's range has "
                                         f"{len(keys_by_project[project])} jobs")
            expect_terms = {}
            for d in range(s.n):
                r = self.log.record_at.get(s.loc[d])
                where = f"project {project} doc {d}"
                if r is None:
                    raise Damage(ix.path, 0, f"{where}: loc {fmt_pos(s.loc[d])} is not a record in the log")
                if r.project != project or r.skey != s.key[d]:
                    raise Damage(ix.path, 0, f"{where}: loc points at {r.project}/{r.spider}/{r.job}, "
                                             f"the key column says spider {s.key[d] >> 32} job {s.key[d] & 0xFFFFFFFF}")
                if newest.get(r.key) is not r:
                    raise Damage(ix.path, 0, f"{where}: not the newest version of {r.project}/{r.spider}/{r.job} in {ix.lo}..{ix.hi}")
                if r.ts != s.ts[d] or r.order_seq != s.seq[d]:
                    raise Damage(ix.path, 0, f"{where}: ts/seq columns ({s.ts[d]}, {s.seq[d]}) disagree with "
                                             f"the record ({r.ts}, {r.order_seq})")
                expect_terms.setdefault((FIELD_STATE, bytes([r.state])), []).append(d)
                expect_terms.setdefault((FIELD_SPIDER, struct.pack("<I", r.spider)), []).append(d)
                for tag in dict.fromkeys(r.tags):
                    expect_terms.setdefault((FIELD_TAG, tag.encode()), []).append(d)
                expect_terms.setdefault((FIELD_PRIORITY, struct.pack("<q", r.priority)), []).append(d)
                if r.unique is not None and r.state in (0, 1):
                    expect_terms.setdefault((FIELD_UNIQUE, r.unique.encode()), []).append(d)
            got = {k: p.docs for k, p in s.terms.items()}
            if got != expect_terms:
                diff = sorted(set(got) ^ set(expect_terms)) or \
                    sorted(k for k in got if got[k] != expect_terms.get(k))
                raise Damage(ix.path, 0, f"project {project}: posting lists disagree with the records "
                                         f"(first differing term: {FIELD_NAMES[diff[0][0]]} {diff[0][1]!r})")
        want = self.log.catalog_at(ix.hi)
        got = {(p, s): (name, nxt) for p, s, nxt, name, _ in ix.catalog}
        if got != want:
            raise Damage(ix.path, 0, f"catalog {sorted(got.items())} differs from the log's at "
                                     f"sequence {ix.hi}: {sorted(want.items())}")

    # steps 5 and 6
    def _replay(self):
        chain_hi = self.chain[-1].hi if self.chain else 0
        self.chain_hi = chain_hi
        tail = {}
        for r in self.log.records:
            if r.seq > chain_hi:
                tail[r.key] = r            # higher sequence number replaces
        self.tail = tail
        # the first replayed frame starts at the last chain file's log_end (or the next segment's start)
        if self.chain:
            first_tail = next((f for f in self.log.frames if f.first_seq > chain_hi), None)
            if first_tail is not None:
                le_seg, le_off = unpack_pos(self.chain[-1].log_end)
                ok = (first_tail.seg, first_tail.off) == (le_seg, le_off) or \
                    (first_tail.seg == le_seg + 1 and first_tail.off == SEG_HDR
                     and le_off == self.log.seg_sizes[le_seg])
                if not ok:
                    raise Damage(self.chain[-1].path, 40, f"log_end {fmt_pos(self.chain[-1].log_end)} is not where "
                                                          f"the next frame starts ({first_tail.seg}:{first_tail.off})")
        # superseded docs: a later chain file or the tail holds the same key
        self.superseded = []
        later = {}                          # project -> set of skeys in later files / tail
        for r in tail.values():
            later.setdefault(r.project, set()).add(r.skey)
        for ix in reversed(self.chain):
            sup = {}
            for project, s in ix.sections.items():
                lk = later.get(project, set())
                sup[project] = {d for d in range(s.n) if s.key[d] in lk}
            self.superseded.insert(0, sup)
            for project, s in ix.sections.items():
                later.setdefault(project, set()).update(s.key)
        # spider names: the last chain file's catalog, then the spider/catalog frames after it
        names = {}
        if self.chain:
            for p, s, nxt, name, _ in self.chain[-1].catalog:
                names[(p, s)] = name
        for fr in self.log.frames:
            if fr.first_seq <= chain_hi:
                continue
            if fr.kind == KIND_SPIDER:
                names[(fr.payload[0], fr.payload[1])] = fr.payload[2]
            elif fr.kind == KIND_CATALOG:
                for p, s, nxt, name, _ in fr.payload:
                    names[(p, s)] = name
        if names != self.log.spiders:
            raise Damage(self.gen_dir, 0, "spider names from the index catalog and the tail differ from the log's")
        self.names = names

    # ---- answers

    def live_records(self):
        """Every live job's record: unsuperseded chain docs (read through loc) plus the tail."""
        out = []
        for ix, sup in zip(self.chain, self.superseded):
            for project, s in ix.sections.items():
                for d in range(s.n):
                    if d not in sup[project]:
                        out.append(self.log.record_at[s.loc[d]])
        out.extend(self.tail.values())
        return out

    def export_lines(self):
        recs = sorted(self.live_records(), key=lambda r: (r.project, r.order_seq, r.spider, r.job))
        return [whole_metadata(r, self.names[(r.project, r.spider)]) for r in recs]

    def listing(self, project):
        """Keys in listing order, merged from the index columns and the replayed tail."""
        streams = []
        for ix, sup in zip(self.chain, self.superseded):
            s = ix.sections.get(project)
            if s is None:
                continue
            gone = sup[project]
            streams.append([(-s.ts[d], -s.seq[d], s.key[d]) for d in range(s.n) if d not in gone])
        tail = sorted((-r.ts, -r.order_seq, r.skey) for r in self.tail.values() if r.project == project)
        streams.append(tail)
        return [f"{project}/{k >> 32}/{k & 0xFFFFFFFF}" for _, _, k in heapq.merge(*streams)]

    def count(self, project, state, tag=None):
        n = 0
        for ix, sup in zip(self.chain, self.superseded):
            s = ix.sections.get(project)
            if s is None:
                continue
            p = s.terms.get((FIELD_STATE, bytes([state])))
            docs = set(p.docs) if p else set()
            if tag is not None:
                t = s.terms.get((FIELD_TAG, tag.encode()))
                docs &= set(t.docs) if t else set()
            n += len(docs - sup[project])
        for r in self.tail.values():
            if r.project == project and r.state == state and (tag is None or tag in r.tags):
                n += 1
        return n


def whole_metadata(r, spider_name):
    """log.md: {"key", "project", "spider", "state", "priority", "tags", ["unique",] times, doc fields}."""
    d = lambda v: json.dumps(v, ensure_ascii=False)
    parts = [f'"key":{d(f"{r.project}/{r.spider}/{r.job}")}', f'"project":{r.project}',
             f'"spider":{d(spider_name)}', f'"state":{d(STATES[r.state])}', f'"priority":{r.priority}',
             f'"tags":{json.dumps(r.tags, ensure_ascii=False, separators=(",", ":"))}']
    if r.unique is not None:
        parts.append(f'"unique":{d(r.unique)}')
    for i, name in enumerate(TIME_FIELDS):
        if r.mask & (1 << i):
            parts.append(f'"{name}":{r.times[i]}')
    inner = r.doc_text.strip()[1:-1].strip()     # the document's fields, byte for byte
    if inner:
        parts.append(inner)
    return "{" + ",".join(parts) + "}"


# --------------------------------------------------------------------------- CLI

def parse_state(s):
    if s in STATES:
        return STATES.index(s)
    if s.isdigit() and int(s) < 4:
        return int(s)
    raise ValueError(f"unknown state {s!r} (one of {', '.join(STATES)})")


def cmd_check(root):
    st = Store(root)
    log = st.log
    bad = False
    out = [f"generation {st.generation}: {len(log.seg_numbers)} segment(s), {len(log.frames)} frames, "
           f"sequence {log.first_seq}..{log.next_seq - 1}, {len(log.records)} job records"]
    if log.torn:
        out.append(f"torn tail (ignored, a writer would cut it): {log.torn[0]}: offset {log.torn[1]}: {log.torn[2]}")
    if log.cut_txn:
        out.append(f"open import transaction cut back: {log.cut_txn[0]}: offset {log.cut_txn[1]} "
                   f"(first sequence {log.cut_txn[2]})")
    for ix in st.indexes:
        if ix.damage is not None:
            bad = True
            out.append(f"DAMAGED index file set aside: {ix.damage}")
        elif ix.stale:
            out.append(f"index file set aside: {ix.fname()}: {ix.stale}")
    for ix in st.chain:
        out.append(f"chain: {ix.fname()} ({ix.lo}..{ix.hi}, {ix.ndocs} docs, projects {sorted(ix.sections)})")
    nsup = sum(len(d) for sup in st.superseded for d in sup.values())
    out.append(f"tail: {len(st.tail)} job(s) after sequence {st.chain_hi}; {nsup} superseded doc(s); "
               f"{len(st.live_records())} live job(s)")
    out += [f"note: {n}" for n in st.notes]
    for line in out:
        print(line)
    if bad:
        print("check: FAILED", file=sys.stderr)
        return 1
    print("check: ok")
    return 0


def main(argv):
    if len(argv) < 3 or argv[2] not in ("export", "list", "count", "check", "frames"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    root, cmd, args = argv[1], argv[2], argv[3:]
    try:
        if cmd == "check" and args:
            raise ValueError("check takes no arguments")
        if cmd == "list":
            if len(args) != 1:
                raise ValueError("usage: list PROJECT")
            project = int(args[0])
        elif cmd == "count":
            if len(args) not in (2, 3):
                raise ValueError("usage: count PROJECT STATE [TAG]")
            project, state = int(args[0]), parse_state(args[1])
        elif args:
            raise ValueError(f"{cmd} takes no arguments")
    except ValueError as e:
        print(f"usage error: {e}", file=sys.stderr)
        return 2
    try:
        if cmd == "check":
            return cmd_check(root)
        st = Store(root)
        for ix in st.indexes:
            if ix.damage is not None:
                print(f"warning: index file set aside (rebuilt from the log): {ix.damage}", file=sys.stderr)
        if cmd == "export":
            out = st.export_lines()
        elif cmd == "list":
            out = st.listing(project)
        elif cmd == "count":
            out = [str(st.count(project, state, args[2] if len(args) == 3 else None))]
        else:
            out = [json.dumps({"segment": f.seg, "offset": f.off, "end": f.end, "kind": KIND_NAMES[f.kind],
                               "flags": f.flags, "first_seq": f.first_seq, "count": f.count,
                               "durable_seq": f.durable_seq}) for f in st.log.frames]
            if st.log.torn:
                out.append(json.dumps({"torn": st.log.torn[0], "offset": st.log.torn[1], "why": st.log.torn[2]}))
        sys.stdout.write("".join(line + "\n" for line in out))
        return 0
    except Damage as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OSError, MemoryError, RecursionError, ValueError, struct.error, IndexError, KeyError,
            OverflowError) as e:
        print(f"error: {root}: cannot read the store: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
