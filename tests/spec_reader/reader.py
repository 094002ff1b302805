#!/usr/bin/env python3
"""Independent reader for the jobq on-disk format, version 10 (log segments of versions 1 to 7,
index files of versions 1 to 4, CURRENT of versions 1 and 2, REACH).

Written from format-spec/*.md alone (and checked against tests/fixtures/v1/ to v9/), without
looking at jobq's code. Standard library only, plus the `zstandard` package for packed
documents (format 7), imported only when a store holds one.

    python3 reader.py DIR export                  every live job, one JSON object a line
    python3 reader.py DIR list PROJECT            keys in listing order, from the index columns
    python3 reader.py DIR count PROJECT STATE [TAG]   from the index posting lists
    python3 reader.py DIR count-reason PROJECT REASON  jobs of any state whose close_reason term
                                                  is REASON, from the close_reason posting lists
                                                  (index version 1 files, which have none, set aside)
    python3 reader.py DIR check                   validate everything; exit 0 when it does
    python3 reader.py DIR frames                  (debug) one JSON line per log frame, then the mark

`export`, `list` and `count` open the store as index.md ("Matching index files to the
log") and durability.md (recovery rules, read-only) say: the index chain is used as is,
only the log after it is validated, and every record read through an index is verified
by its own CRC (rule 6). `check` also validates every frame from the start of the log
and compares every index file that matches the log with what the log says.

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

STATES = ("pending", "running", "finished", "deleted", "purged")   # 4: a tombstone (log.md)
PURGED = 4
TIME_FIELDS = ("pending_time", "running_time", "finished_time", "deleted_time")
KIND_JOBS, KIND_SPIDER, KIND_CATALOG, KIND_COMMIT, KIND_DICT, KIND_ENTRY = 1, 2, 3, 4, 5, 6
KIND_NAMES = {1: "jobs", 2: "spider", 3: "catalog", 4: "commit", 5: "dictionary", 6: "Raft entry"}
ENTRY_FIXED = 48                  # log.md, "Raft entry": the entry frame's fixed payload
LOG_MAGIC = b"JOBQLOG\0"
IDX_MAGIC = b"JOBQIDX\0"
CUR_MAGIC = b"JOBQCUR\0"
CURRENT_VERSIONS = (1, 2)         # CURRENT (layout.md: 2 adds the log start)
INDEX_VERSIONS = (1, 2, 3, 4)     # index files (index.md: 1 lacks field 6; 3 packs; 4 adds dictionaries)
LOG_VERSIONS = (1, 2, 3, 4, 5, 6, 7)  # log segments (conventions.md, "Versions and upgrades")
MAX_FRAME_LEN = 1 << 30
SEG_HDR = 64
MARK_MAGIC = b"JOBQMRK\0"
MARK_SLOTS = (4096, 8192)         # slot 0, slot 1 (log.md, "Durable marks")
MARK_SLOT = 56
V2_DATA = 12288                   # where frames start in a version-2 (or 3) segment
DATA_START = {1: SEG_HDR, 2: V2_DATA, 3: V2_DATA, 4: V2_DATA, 5: V2_DATA, 6: V2_DATA, 7: V2_DATA}
FLAG_PACKED = 2                   # log.md, "Packed document": compact record flag bit 1
MAX_TEXT = (16 << 20) + (64 << 10)  # a packed document's length: 2 to this
MAX_DICT = 1 << 20                # log.md, "Dictionary": 1 byte to 1 MiB
# Dictionaries by (generation directory, id): ids name one content within a generation.
DICTS = {}
ZERO_TAIL_VERSION = 4             # log.md, "Version 4" (and 5): the last segment may end in preallocated zeros
FRAME_HDR = 32
REC_HDR = 8
COMPACT = 0x80000000              # log.md, "Job record": bit 31 of a record's first word: compact
COMPACT_MIN_BODY = 20             # log.md, "Compact record": a shorter body is damage
IDX_HDR = 64
IDX_FOOTER = 48
SECTION_HDR = 72
DICT_ENTRY = 16                   # index versions 1 and 2
DICT_ENTRY_V3 = 12
PACK_BLOCK = 128                  # index.md, "Packed column"
PACK_HDR = 24
FLAT_MAX = 8                      # index.md, "Posting list": a list of at most 8 docs is flat
FIELD_STATE, FIELD_SPIDER, FIELD_TAG, FIELD_PRIORITY, FIELD_UNIQUE, FIELD_CLOSE_REASON = 1, 2, 3, 4, 5, 6
FIELD_TOKEN = 7                   # index version 3: a running job's auth token
FIELD_NAMES = {1: "state", 2: "spider", 3: "tag", 4: "priority", 5: "unique", 6: "close_reason", 7: "token"}
MAX_CLOSE_REASON = 1024           # index.md: a longer term is not posted
# log.md: the metadata document never holds these; other "*_time" names are ordinary fields
DOC_FORBIDDEN = {"key", "project", "spider", "state", "priority", "tags", "unique"} | set(TIME_FIELDS)

SEG_RE = re.compile(r"^log-(\d{10})\.jql$")
IDX_RE = re.compile(r"^idx-([0-9a-f]{16})-([0-9a-f]{16})\.jqi$")
GEN_RE = re.compile(r"^gen-([0-9a-f]{16})$")
# rule 2's scan: offsets whose header bytes 8..12 can decode (known kind, flag bits 0 and 1 only, reserved 0)
_CANDIDATE = re.compile(rb"(?=.{8}[\x01-\x05][\x00-\x03]\x00\x00)", re.DOTALL)
FLAG_TXN, FLAG_RELOCATED = 1, 2


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


def read_file(path, n=None):
    try:
        with open(path, "rb") as f:
            return f.read() if n is None else f.read(n)
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
    except (ValueError, RecursionError) as e:
        buf.fail(off, f"{what}: not valid JSON: {e}")
    if not isinstance(v, _Obj):
        buf.fail(off, f"{what}: not a JSON object")
    return v


# --------------------------------------------------------------------------- CURRENT

def read_raft_purge(root):
    """layout.md, "RAFT": a cluster node's purge point (its Raft index), or None (no RAFT file,
    or no purge point). Entries up to it count as committed (log.md, "Applied entries")."""
    path = os.path.join(root, "RAFT")
    if not os.path.exists(path):
        return None
    b = Buf(read_file(path), path)
    if len(b) != 64:
        b.fail(min(len(b), 64), f"RAFT is {len(b)} bytes, must be 64")
    if b.raw(0, 8, "magic") != b"JOBQRAFT":
        b.fail(0, "bad magic (expected \"JOBQRAFT\")")
    stored, comp = b.u32(60, "crc"), masked_crc(b.d[0:60])
    if stored != comp:
        b.fail(60, f"CRC mismatch (stored 0x{stored:08x}, computed 0x{comp:08x})")
    version = b.u32(8, "version")
    if version not in (1, 2):
        b.fail(8, f"unknown RAFT version {version} (this reader knows 1 and 2)")
    flags = b.u32(12, "flags")
    owner = b.u32(56, "owner")  # version 2: the node this directory belongs to; version 1: 0
    if flags & ~7 or (owner == 0) != (version == 1):
        b.fail(12, "unknown RAFT flags, or an owner that does not match the version")
    return b.u64(32, "purge index") if flags & 4 else None


def read_current(root):
    """layout.md, "CURRENT": (generation, log start); the start is None in a version-1 file."""
    path = os.path.join(root, "CURRENT")
    if not os.path.exists(path):
        raise Damage(path, 0, "no CURRENT: the directory holds no store")
    b = Buf(read_file(path), path)
    # durability.md rule 7: magic, version or checksum, whichever fails first
    if len(b) < 8 or b.raw(0, 8, "magic") != CUR_MAGIC:
        b.fail(0, "bad magic (expected \"JOBQCUR\\0\")")
    ver = b.u32(8, "version")
    if ver not in CURRENT_VERSIONS:
        b.fail(8, f"unknown CURRENT version {ver} (this reader knows versions 1 and 2)")
    if len(b) != 32:
        b.fail(min(len(b), 32), f"CURRENT is {len(b)} bytes, must be 32")
    stored = b.u32(28, "crc")
    comp = masked_crc(b.d[0:28])
    if stored != comp:
        b.fail(28, f"CRC mismatch (stored 0x{stored:08x}, computed 0x{comp:08x})")
    if b.u32(12, "reserved") != 0:
        b.fail(12, "reserved field is not zero")
    start = b.u32(24, "log start")
    if ver == 1 and start != 0:
        b.fail(24, "reserved field is not zero")
    if ver == 2 and start == 0:
        b.fail(24, "log start 0 (segments count from 1)")
    return b.u64(16, "generation"), (start if ver == 2 else None)


def read_reach(gen_dir):
    """layout.md, "REACH" (format 10): the segment the log has reached, or None without the file."""
    path = os.path.join(gen_dir, "REACH")
    if not os.path.exists(path):
        return None
    b = Buf(read_file(path), path)
    if len(b) != 20 or b.raw(0, 8, "magic") != b"JOBQRCH\0":
        b.fail(0, "not a REACH file (20 bytes, magic \"JOBQRCH\\0\")")
    stored, comp = b.u32(16, "crc"), masked_crc(b.d[0:16])
    if stored != comp:
        b.fail(16, f"CRC mismatch (stored 0x{stored:08x}, computed 0x{comp:08x})")
    if b.u32(8, "version") != 1:
        b.fail(8, f"unknown REACH version {b.u32(8, 'version')} (this reader knows version 1)")
    n = b.u32(12, "segment")
    if n == 0:
        b.fail(12, "REACH names segment 0 (segments count from 1)")
    return n


# --------------------------------------------------------------------------- records and frames

class Record:
    """One job version (a record of a jobs frame)."""
    __slots__ = ("seq", "pos", "path", "file_off", "project", "spider", "job", "state", "mask",
                 "priority", "order_seq", "times", "tags", "unique", "doc_text", "prev")

    @property
    def key(self):
        return (self.project, self.spider, self.job)

    @property
    def ts(self):
        return self.times[3 if self.state == PURGED else self.state]

    @property
    def skey(self):
        return (self.spider << 32) | self.job


def decode_record(b, off, what):
    """The record (`u32 word, u32 crc, body`) at offset `off` of Buf `b`: (Record, end).
    Its own CRC is verified before the body is decoded. Bit 31 of `word`: compact."""
    word, crc = b.un("<II", off, f"{what}: body_len and crc")
    compact, bl = bool(word & COMPACT), word & ~COMPACT
    body = b.sub(off + REC_HDR, bl, f"{what}: body of {bl} bytes")
    comp = masked_crc(body.d)
    if comp != crc:
        b.fail(off, f"{what}: record CRC mismatch (stored 0x{crc:08x}, computed 0x{comp:08x})")
    r = _decode_compact(body, what) if compact else _decode_body(body, what)
    r.path, r.file_off = b.path, b.base + off
    r.seq = None
    return r, off + REC_HDR + bl


def _check_codes(b, what, state, mask, flags, prev, at):
    """log.md: the four code bytes of a record (wide: at body offset 12; compact: 0)."""
    if state > PURGED:
        b.fail(at, f"{what}: state {state} is unknown")
    if mask & ~0x0F:
        b.fail(at + 1, f"{what}: times mask 0x{mask:02x} has bits beyond 0..3")
    if not mask & (1 << (3 if state == PURGED else state)):
        b.fail(at + 1, f"{what}: times mask 0x{mask:02x} lacks the bit of its state ({STATES[state]})")
    if flags & ~(1 | (FLAG_PACKED if at == 0 else 0)):    # bit 1 (packed): compact records only
        b.fail(at + 2, f"{what}: flags 0x{flags:02x} have reserved bits set")
    # 0 not recorded, 1 none (the version created the job), 2 + the previous version's state
    if prev > 2 + PURGED:
        b.fail(at + 3, f"{what}: previous state {prev} is unknown (0 to {2 + PURGED})")


def _decode_body(b, what):
    r = Record()
    project, spider, job = b.un("<III", 0, f"{what}: key")
    state, mask, flags, prev = b.un("<BBBB", 12, f"{what}: state")
    priority, order_seq = b.un("<qQ", 16, f"{what}: priority")
    times = b.un("<4Q", 32, f"{what}: times")
    if project < 1 or spider < 1 or job < 1:
        b.fail(0, f"{what}: key {project}/{spider}/{job}: ids must be >= 1")
    _check_codes(b, what, state, mask, flags, prev, 12)
    for i in range(4):
        if not mask & (1 << i) and times[i] != 0:
            b.fail(32 + 8 * i, f"{what}: {TIME_FIELDS[i]} is {times[i]} but its mask bit is clear")
    ntags = b.u16(64, f"{what}: tag count")
    off = 66
    tags = []
    for i in range(ntags):
        tl = b.u16(off, f"{what}: tag {i} length")
        tags.append(b.utf8(off + 2, tl, f"{what}: tag {i}"))
        off += 2 + tl
    unique = None
    if flags & 1:
        ul = b.u16(off, f"{what}: unique length")
        unique = b.utf8(off + 2, ul, f"{what}: unique")
        off += 2 + ul
    dl = b.u32(off, f"{what}: metadata document length")
    doc_off = off + 4
    doc = b.utf8(doc_off, dl, f"{what}: metadata document")
    off = doc_off + dl
    if off != len(b):
        b.fail(off, f"{what}: {len(b) - off} bytes after the metadata document")
    obj = parse_json_object(doc, b, doc_off, f"{what}: metadata document")
    for k, _ in obj:
        if k in DOC_FORBIDDEN:
            b.fail(doc_off, f"{what}: metadata document holds the field {k!r}, which the record holds itself")
    r.project, r.spider, r.job = project, spider, job
    r.state, r.mask, r.priority, r.order_seq = state, mask, priority, order_seq
    r.times, r.tags, r.unique, r.doc_text, r.prev = times, tags, unique, doc, prev
    return r


def auth_token(doc_text):
    """index.md field 7: the text of the last `auth` field when it is a JSON string, as UTF-8."""
    pairs = [v for k, v in json.loads(doc_text, object_pairs_hook=list) if k == "auth"]
    if not pairs or not isinstance(pairs[-1], str):
        return None
    try:
        return pairs[-1].encode()
    except UnicodeEncodeError:                # an escaped unpaired surrogate: no UTF-8 text
        return None


def _varint(b, off, what):
    """log.md, "Compact record": unsigned LEB128, at most 10 bytes (the 10th 0 or 1), shortest form."""
    v = 0
    for i in range(10):
        c = b.un("<B", off + i, what)[0]
        if i == 9 and c > 1:
            b.fail(off, f"{what}: varint past 64 bits")
        v |= (c & 0x7F) << (7 * i)
        if not c & 0x80:
            if c == 0 and i > 0:
                b.fail(off, f"{what}: varint not in its shortest form")
            return v, off + i + 1
    b.fail(off, f"{what}: varint longer than 10 bytes")


def _unzigzag(u):
    return (u >> 1) ^ -(u & 1)


def _decode_compact(b, what):
    """log.md, "Compact record": the body of a compact record."""
    r = Record()
    if len(b) < COMPACT_MIN_BODY:
        b.fail(0, f"{what}: compact body of {len(b)} bytes, shorter than 20")
    state, mask, flags, prev = b.un("<BBBB", 0, f"{what}: state")
    order_seq = b.u64(4, f"{what}: order_seq")
    _check_codes(b, what, state, mask, flags, prev, 0)
    off = 12
    ids = []
    for name in ("project", "spider", "job"):
        at = off
        v, off = _varint(b, off, f"{what}: {name} id")
        if not 1 <= v < 1 << 32:
            b.fail(at, f"{what}: {name} id {v}: must be >= 1 and below 2^32")
        ids.append(v)
    u, off = _varint(b, off, f"{what}: priority")
    priority = _unzigzag(u)
    times, prevt = [0, 0, 0, 0], None
    for i in range(4):
        if mask & (1 << i):
            u, off = _varint(b, off, f"{what}: {TIME_FIELDS[i]}")
            t = u if prevt is None else (prevt + _unzigzag(u)) % (1 << 64)
            times[i] = prevt = t
    ntags, off = _varint(b, off, f"{what}: tag count")
    if ntags > 65535:
        b.fail(off, f"{what}: {ntags} tags, more than 65,535")
    tags = []
    for i in range(ntags):
        tl, off = _varint(b, off, f"{what}: tag {i} length")
        tags.append(b.utf8(off, tl, f"{what}: tag {i}"))
        off += tl
    unique = None
    if flags & 1:
        ul, off = _varint(b, off, f"{what}: unique length")
        unique = b.utf8(off, ul, f"{what}: unique")
        off += ul
    doc_off = off
    if flags & FLAG_PACKED:
        doc = _unpack(b, off, what)
        b = Buf(doc.encode(), b.path, b.base + doc_off)   # errors in the text name where the frame is
        doc_off = 0
    else:
        doc = b.utf8(doc_off, len(b) - doc_off, f"{what}: metadata document")
    obj = parse_json_object(doc, b, doc_off, f"{what}: metadata document")
    for k, _ in obj:
        if k in DOC_FORBIDDEN:
            b.fail(doc_off, f"{what}: metadata document holds the field {k!r}, which the record holds itself")
    r.project, r.spider, r.job = ids
    r.state, r.mask, r.priority, r.order_seq = state, mask, priority, order_seq
    r.times, r.tags, r.unique, r.doc_text, r.prev = tuple(times), tags, unique, doc, prev
    return r


def _unpack(b, off, what):
    """log.md, "Packed document": varint dict id, varint length, a magicless zstd frame (the rest)."""
    at = off
    dict_id, off = _varint(b, off, f"{what}: dictionary id")
    if not 1 <= dict_id < 1 << 32:
        b.fail(at, f"{what}: dictionary id {dict_id}: must be >= 1 and below 2^32")
    at = off
    n, off = _varint(b, off, f"{what}: packed document length")
    if not 2 <= n <= MAX_TEXT:
        b.fail(at, f"{what}: packed document length {n}: must be 2 to {MAX_TEXT}")
    frame = b.raw(off, len(b) - off, f"{what}: zstd frame")
    if not frame:
        b.fail(off, f"{what}: packed document without a frame")
    gen = os.path.dirname(b.path)
    raw = DICTS.get((gen, dict_id))
    if raw is None:
        b.fail(at, f"{what}: the document is packed with dictionary {dict_id}, which the generation does not hold")
    import zstandard
    d = zstandard.ZstdCompressionDict(raw, dict_type=zstandard.DICT_TYPE_AUTO)
    dctx = zstandard.ZstdDecompressor(dict_data=d, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    try:
        # at most n + 1 bytes first (the frame has no content size: `len` bounds the output), then
        # the whole frame once more to see that it ends where the body does
        with dctx.stream_reader(frame, read_across_frames=False) as rd:
            text = rd.read(n + 1)
        if len(text) == n:
            dobj = dctx.decompressobj()
            whole = dobj.decompress(frame)
            if whole != text or not dobj.eof or dobj.unused_data:
                b.fail(off, f"{what}: the packed document's frame does not end where the record does")
    except zstandard.ZstdError as e:
        b.fail(off, f"{what}: the packed document does not decompress: {e}")
    if len(text) != n:
        b.fail(off, f"{what}: the packed document is {'more than ' if len(text) > n else ''}{len(text)} "
                    f"bytes, the record says {n}")
    return Buf(text, b.path, b.base + off).utf8(0, n, f"{what}: packed document")


def register_dict(b, off, dict_id, n, what):
    """A dictionary (log.md, "Dictionary"; index.md, "Catalog") of b's generation."""
    if dict_id < 1:
        b.fail(off, f"{what}: dictionary id 0")
    if not 1 <= n <= MAX_DICT:
        b.fail(off, f"{what}: dictionary {dict_id} of {n} bytes (1 to {MAX_DICT})")
    raw = b.raw(off + 8 if what.startswith("index") else off + 4, n, f"{what}: dictionary {dict_id}")
    key = (os.path.dirname(b.path), dict_id)
    if DICTS.get(key, raw) != raw:
        b.fail(off, f"{what}: dictionary {dict_id} again with other bytes")
    DICTS[key] = raw


def close_reason_term(doc_text):
    """index.md, "The close_reason term": the bytes a record's close_reason is posted under, or None."""
    dec = json.JSONDecoder(parse_float=decimal.Decimal)
    ws = " \t\r\n"
    i = len(doc_text) - len(doc_text.lstrip(ws)) + 1         # after "{"
    raw = None
    while True:
        while doc_text[i] in ws:
            i += 1
        if doc_text[i] == "}":
            break
        name, i = json.decoder.scanstring(doc_text, i + 1)
        while doc_text[i] in ws + ":":
            i += 1
        _, end = dec.raw_decode(doc_text, i)
        if name == "close_reason":
            raw = doc_text[i:end]                             # the last one counts
        i = end
        while doc_text[i] in ws + ",":
            i += 1
    if raw is None:
        return None
    term = raw.encode()
    if raw.startswith('"'):
        try:
            term = json.loads(raw).encode("utf-8")            # an unpaired surrogate does not encode
        except UnicodeEncodeError:
            pass
    return term if len(term) <= MAX_CLOSE_REASON else None


def parse_catalog_entries(b, what, rest=False):
    """u32 n, then n x (u32 project, u32 spider, u32 next job id, u16 len, name); exactly
    (with `rest`: (entries, where they end), bytes may follow)."""
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
    if rest:
        return out, off
    if off != len(b):
        b.fail(off, f"{what}: {len(b) - off} bytes after the last entry")
    return out


class Frame:
    __slots__ = ("path", "seg", "off", "end", "kind", "flags", "count", "first_seq",
                 "durable_seq", "length", "payload")

    @property
    def pos(self):
        return pack_pos(self.seg, self.off)

    @property
    def end_pos(self):
        return pack_pos(self.seg, self.end)

    @property
    def last_seq(self):
        return self.first_seq + self.count - 1


def header_fields(data, off):
    """(fields, None) when the 32 header bytes at `off` decode (known kind, only flag bits 0 and 1, zero
    reserved bytes, count >= 1, and 1 for kinds other than jobs, first_seq >= 1, len <= 2^30),
    whether or not the frame lies in the file and its CRC matches; (None, reason) otherwise."""
    if off + FRAME_HDR > len(data):
        return None, f"frame header needs {FRAME_HDR} bytes, only {len(data) - off} left in the file"
    _, ln, kind, flags, res, count, first_seq, durable = struct.unpack_from("<IIBBHIQQ", data, off)
    if kind not in KIND_NAMES:
        return None, f"unknown frame kind {kind}"
    if flags & ~(FLAG_TXN | FLAG_RELOCATED):
        return None, f"reserved frame flag bits set (flags 0x{flags:02x})"
    if res:
        return None, "reserved frame header field is not zero"
    if count < 1:
        return None, "frame count is 0"
    if kind != KIND_JOBS and count != 1:
        return None, f"{KIND_NAMES[kind]} frame with count {count} (must be 1)"
    if first_seq < 1:
        return None, "frame first_seq is 0"
    if ln > MAX_FRAME_LEN:
        return None, f"frame length {ln} exceeds 2^30"
    return (ln, kind, flags, count, first_seq, durable), None


def decode_frame_header(data, off):
    """(fields, None) when the header decodes, the frame lies in the file and its CRC
    matches; (None, reason) otherwise. Sequence and transaction rules are the caller's."""
    fields, why = header_fields(data, off)
    if fields is None:
        return None, why
    ln = fields[0]
    if off + FRAME_HDR + ln > len(data):
        return None, f"frame of {FRAME_HDR + ln} bytes runs past the end of the file ({len(data) - off} left)"
    crc = struct.unpack_from("<I", data, off)[0]
    comp = masked_crc(data[off + 4:off + FRAME_HDR + ln])
    if comp != crc:
        return None, f"frame CRC mismatch (stored 0x{crc:08x}, computed 0x{comp:08x})"
    return fields, None


def make_frame(path, seg, off, fields):
    ln, kind, flags, count, first_seq, durable = fields
    fr = Frame()
    fr.path, fr.seg, fr.off, fr.end = path, seg, off, off + FRAME_HDR + ln
    fr.kind, fr.flags, fr.count, fr.first_seq, fr.durable_seq, fr.length = \
        kind, flags, count, first_seq, durable, ln
    return fr


def decode_entry(b):
    """log.md, "Raft entry": the entry frame's payload as a dict."""
    index, term, leader, committed = b.un("<QQQQ", 0, "entry head")
    etype = b.raw(32, 1, "entry type")[0]
    flags = b.raw(33, 1, "entry flags")[0]
    if etype not in (0, 1, 2):
        b.fail(32, f"unknown entry type {etype}")
    if flags & ~1:
        b.fail(33, f"unknown entry flags 0x{flags:02x}")
    if b.u16(34, "entry reserved"):
        b.fail(34, "entry reserved bytes are not zero")
    if not flags & 1 and committed:
        b.fail(24, "a committed index without its flag")
    frames, data_len, body_len = b.un("<III", 36, "entry counts")
    if ENTRY_FIXED + body_len != len(b):
        b.fail(44, f"body length {body_len}, the payload has {len(b) - ENTRY_FIXED} bytes after the head")
    if etype == 1 and (frames == 0 or data_len == 0 or body_len or data_len > MAX_FRAME_LEN):
        b.fail(36, "a normal entry carries no data frame, a body, or too much data")
    if etype == 0 and (frames or data_len or body_len):
        b.fail(36, "a blank entry carries data")
    if etype == 2 and (frames or data_len or not body_len):
        b.fail(36, "a membership entry carries frames or has no body")
    if flags & 1 and committed >= index:
        b.fail(24, f"committed index {committed} not below the entry's {index}")
    body = b.raw(ENTRY_FIXED, body_len, "entry body") if body_len else b""
    if etype == 2:
        try:
            json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            b.fail(ENTRY_FIXED, f"membership body is not JSON: {e}")
    return {"index": index, "term": term, "leader": leader, "committed": committed if flags & 1 else None,
            "type": etype, "frames": frames, "data_len": data_len}


def decode_payload(fr, data):
    """The payload of a frame whose CRC matches. Anything that does not decode is
    corruption wherever the frame is (log.md), reported at the frame's offset."""
    b = Buf(data[fr.off + FRAME_HDR:fr.end], fr.path, fr.off + FRAME_HDR)
    try:
        if fr.kind == KIND_JOBS:
            recs = []
            off = 0
            for i in range(fr.count):
                r, off = decode_record(b, off, f"record {i}")
                r.seq = fr.first_seq + i
                r.pos = pack_pos(fr.seg, r.file_off)
                recs.append(r)
            if off != len(b):
                b.fail(off, f"{len(b) - off} bytes after the {fr.count} records")
            return recs
        if fr.kind == KIND_SPIDER:
            project, spider = b.un("<II", 0, "spider registration")
            nl = b.u16(8, "spider name length")
            name = b.utf8(10, nl, "spider name")
            if 10 + nl != len(b):
                b.fail(10 + nl, f"{len(b) - 10 - nl} bytes after the spider name")
            if project < 1 or spider < 1:
                b.fail(0, "spider registration: project and spider ids must be >= 1")
            return (project, spider, name)
        if fr.kind == KIND_CATALOG:
            entries = parse_catalog_entries(b, "catalog frame")
            seen = set()
            for project, spider, _, _, o in entries:
                if (project, spider) in seen:
                    b.fail(o, f"catalog frame lists spider {project}/{spider} twice")
                seen.add((project, spider))
            return entries
        if fr.kind == KIND_DICT:
            dict_id = b.u32(0, "dictionary id")
            register_dict(b, 0, dict_id, len(b) - 4, "dictionary frame")
            return dict_id
        if fr.kind == KIND_ENTRY:
            return decode_entry(b)
        if len(b) != 8:
            b.fail(0, f"commit payload is {len(b)} bytes, must be 8")
        return b.u64(0, "commit")
    except Damage as e:
        raise Damage(fr.path, fr.off, f"corruption: the {KIND_NAMES[fr.kind]} frame's CRC matches but its "
                                      f"payload does not decode (at file offset {e.offset}: {e.msg})")


# --------------------------------------------------------------------------- log segments

class Mark:
    """The durable mark of a version-2 segment (log.md, "Durable marks"): every frame ending at
    or before `end` was synced, and the frame at `end` has sequence `next_seq`. `slot` is None
    when no slot is valid (then end = 12288 and next_seq = the header's first sequence)."""
    __slots__ = ("slot", "epoch", "end", "next_seq", "invalid")

    def describe(self):
        if self.slot is None:
            return f"no valid mark slot ({'; '.join(self.invalid)}): durable_end {self.end}, next_seq {self.next_seq}"
        other = f" (slot {1 - self.slot}: {self.invalid[0]})" if self.invalid else ""
        return f"slot {self.slot} (epoch {self.epoch}): durable_end {self.end}, next_seq {self.next_seq}{other}"


def parse_mark_slot(data, slot, number, generation):
    """(epoch, durable_end, next_seq) of a valid slot, or (None, why it is not valid). A slot is
    valid when its magic, checksum, segment number, generation and reserved fields are right and
    epoch >= 1; this reader also asks what the spec states of a written slot but does not list
    among the validity rules: epoch e sits in slot e mod 2, and durable_end >= 12288."""
    so = MARK_SLOTS[slot]
    b = data[so:so + MARK_SLOT]
    if not any(b):
        return None, f"slot {slot} at {so}: never written (zeros)"
    if b[0:8] != MARK_MAGIC:
        return None, f"slot {slot} at {so}: bad magic"
    num, res1, gen, epoch, end, nxt, res2, crc = struct.unpack_from("<IIQQQQII", b, 8)
    comp = masked_crc(b[0:52])
    if crc != comp:
        return None, f"slot {slot} at {so}: CRC mismatch (stored 0x{crc:08x}, computed 0x{comp:08x})"
    if num != number:
        return None, f"slot {slot} at {so}: segment number {num}, the file's is {number}"
    if gen != generation:
        return None, f"slot {slot} at {so}: generation {gen}, the file's is {generation}"
    if res1 or res2:
        return None, f"slot {slot} at {so}: reserved field is not zero"
    if epoch < 1:
        return None, f"slot {slot} at {so}: epoch 0"
    if epoch % 2 != slot:
        return None, f"slot {slot} at {so}: epoch {epoch} belongs in slot {epoch % 2}"
    if end < V2_DATA:
        return None, f"slot {slot} at {so}: durable_end {end} is before the first frame ({V2_DATA})"
    return (epoch, end, nxt), None


def read_mark(data, number, generation, first_seq):
    """The segment's mark: the valid slot with the larger epoch."""
    m = Mark()
    m.slot, m.epoch, m.end, m.next_seq, m.invalid = None, 0, V2_DATA, first_seq, []
    for slot in (0, 1):
        got, why = parse_mark_slot(data, slot, number, generation)
        if got is None:
            m.invalid.append(why)
        elif got[0] > m.epoch:
            m.slot, (m.epoch, m.end, m.next_seq) = slot, got
    return m


class Segments:
    """The live generation's segment files; headers validated at open. The durable mark is
    read for the last segment only, when it is of version 2 (every earlier one was synced whole)."""

    def __init__(self, gen_dir, generation, numbers):
        self.gen_dir, self.generation = gen_dir, generation
        if not numbers:
            raise Damage(gen_dir, 0, "the generation holds no log segment")
        # layout.md, "Log start": the log is every segment from its first one on (online
        # compaction removes the oldest), and no number after the first may be missing
        self.first = numbers[0]
        if numbers != list(range(self.first, self.first + len(numbers))):
            missing = sorted(set(range(self.first, numbers[-1] + 1)) - set(numbers))
            raise Damage(gen_dir, 0, f"log segments are not contiguous from {self.first}: missing {missing}")
        self.numbers = numbers
        self.last = numbers[-1]
        self._data = {}
        self._first = {}
        self._version = {}
        self.notes = []
        self.mark = None
        for n in numbers:
            self._check_header(n, read_file(self.path(n), V2_DATA))
            # log.md: versions never decrease along the log
            if n > self.first and self._version[n] < self._version[n - 1]:
                raise Damage(self.path(n), 8, f"corruption: a version-{self._version[n]} segment after a "
                                              f"version-{self._version[n - 1]} one (versions never decrease)")

    def path(self, n):
        return os.path.join(self.gen_dir, f"log-{n:010d}.jql")

    def __contains__(self, n):
        return self.first <= n <= self.last

    def _check_header(self, n, data):
        path = self.path(n)
        b = Buf(data, path)
        if len(data) < 8 or data[0:8] != LOG_MAGIC:
            b.fail(0, "bad magic (expected \"JOBQLOG\\0\")")
        ver = b.u32(8, "version")
        if ver not in LOG_VERSIONS:
            b.fail(8, f"unknown log segment version {ver} (written by a newer jobq? this reader knows "
                      f"versions {', '.join(map(str, LOG_VERSIONS))})")
        if len(data) < SEG_HDR:
            b.fail(0, f"segment is {len(data)} bytes, shorter than its {SEG_HDR}-byte header")
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
        first = b.u64(24, "first sequence number")
        if first < 1:
            b.fail(24, "the segment's first sequence number is 0")
        self._first[n] = first
        self._version[n] = ver
        if ver == 1:
            return
        # versions 2 to 4: header, zeros to 4096, two mark pages; created whole, so a shorter file is damaged
        if len(data) < V2_DATA:
            b.fail(len(data), f"version-{ver} segment is {len(data)} bytes, shorter than its header and mark "
                              f"pages ({V2_DATA})")
        if any(data[SEG_HDR:MARK_SLOTS[0]]):
            nz = next(i for i in range(SEG_HDR, MARK_SLOTS[0]) if data[i])
            self.notes.append(f"{path}: non-zero byte at {nz} between the segment header and the first mark "
                              f"page (ignored: no checksum covers the padding)")
        if n != self.last:
            return
        self.mark = read_mark(data, n, gen, first)
        for so in MARK_SLOTS:
            if any(data[so + MARK_SLOT:so + 4096]):
                self.notes.append(f"{path}: non-zero bytes after the mark slot at {so} in its page "
                                  f"(ignored: a slot's validity is its own 56 bytes)")

    def version(self, n):
        return self._version[n]

    def data_start(self, n):
        """Offset of the first frame: 64 in a version-1 segment, 12288 in a version-2 to 4 one."""
        return DATA_START[self._version[n]]

    def first_seq(self, n):
        return self._first[n]

    def data(self, n):
        d = self._data.get(n)
        if d is None:
            d = self._data[n] = read_file(self.path(n))
        return d

    def read_record(self, pos, what):
        """The record whose `body_len` field is at packed position `pos`, CRC-verified."""
        seg, off = unpack_pos(pos)
        if seg not in self:
            raise Damage(self.gen_dir, 0, f"{what}: {fmt_pos(pos)}: no such segment")
        data = self.data(seg)
        if off < self.data_start(seg) + FRAME_HDR:
            raise Damage(self.path(seg), off, f"corruption: {what}: a record cannot start inside the headers")
        try:
            r, _ = decode_record(Buf(data, self.path(seg)), off, what)
        except Damage as e:
            raise Damage(self.path(seg), off, f"corruption: damaged record ({e.msg}"
                                              f"{'' if e.offset == off else f' at file offset {e.offset}'})")
        r.pos = pos
        return r


# --------------------------------------------------------------------------- spiders

class Spiders:
    """Spider ids and names (log.md: within a project a name maps to one id and an id to one name)."""

    def __init__(self):
        self.names = {}           # (project, spider) -> name
        self.ids = {}             # (project, name) -> spider

    def copy(self):
        s = Spiders()
        s.names, s.ids = dict(self.names), dict(self.ids)
        return s

    def register(self, path, off, project, spider, name, from_catalog):
        k = (project, spider)
        old = self.names.get(k)
        if old is not None:
            if old != name:
                raise Damage(path, off, f"corruption: spider {project}/{spider} registered as {name!r}, "
                                        f"it was {old!r} (an id maps to one name for the life of the store)")
            return
        other = self.ids.get((project, name))
        if other is not None:
            raise Damage(path, off, f"corruption: spider name {name!r} of project {project} registered as id "
                                    f"{spider}, it already has id {other}")
        if not from_catalog:
            expect = 1 + max([s for (p, s) in self.names if p == project], default=0)
            if spider != expect:
                raise Damage(path, off, f"corruption: spider id {spider} of project {project} registered; ids "
                                        f"are allocated from 1 upward, the next is {expect}")
        self.names[k] = name
        self.ids[(project, name)] = spider


# --------------------------------------------------------------------------- validating the log

class Walk:
    """Validates frames from a start position to the end of the log, applying log.md's
    validity and transaction rules and durability.md's recovery rules 1-5 read-only.

    `carry`: the sequence number of the first frame of the chain's last file's last frame
    when that frame carries the transaction flag: a transaction began before the start,
    and its commit is accepted (log.md, "an index file may end inside a transaction")."""

    def __init__(self, segs, seg, off, expected, spiders, proof, carry=None, purged=None):
        self.segs = segs
        self.start = (seg, off)
        self.start_seq = expected
        self.spiders = spiders
        self.proof = proof            # (hi_seq, file name) of the index covering most, or (0, None)
        self.carry = carry
        self.frames = []              # applied (committed) frames in log order
        self.frame_at = {}            # packed pos -> applied Frame
        self.records = []             # applied job records in sequence order
        self.events = []              # (seq, kind, data) of applied frames, for catalog snapshots
        self.torn = None              # (path, offset, reason) of a torn tail
        self.cut_txn = None           # (path, offset, first_seq) of an open transaction cut back
        self.next_seq = None
        self.end_pos = None           # packed position just after the last kept frame
        # log.md, "Raft entry": entries seen, their frames applied only up to the highest
        # index an entry frame says committed
        self.entries = []             # (index, [data frames]) of whole entries, in log order
        self.entry = None             # the entry whose data frames are still expected
        self.seen_entry = False
        # the highest `committed` of the walk's entry frames, at least the RAFT purge point
        self.committed = purged
        self.unapplied = 0            # entries appended, not applied
        self._run()
        self._apply_entries()

    def _dicts_first(self):
        """log.md, "Dictionary" and "Catalog": a dictionary or catalog frame may follow records that
        use it (online compaction writes them at the end): take every valid one of the range first."""
        segs = self.segs
        seg, off = self.start
        while True:
            data = segs.data(seg)
            while off < len(data):
                fields, _ = decode_frame_header(data, off)
                if fields is None:
                    break
                if fields[1] in (KIND_DICT, KIND_CATALOG):
                    fr = make_frame(segs.path(seg), seg, off, fields)
                    try:
                        payload = decode_payload(fr, data)
                    except Damage:
                        payload = None        # judged by the walk itself
                    if fields[1] == KIND_CATALOG and payload is not None:
                        # log.md, "Catalog": online compaction's catalog frame follows records
                        # whose spider frames it removed
                        for project, spider, _, name, _ in payload:
                            self.spiders.register(fr.path, fr.off, project, spider, name, True)
                off += FRAME_HDR + fields[0]
            if seg == segs.last:
                break
            seg, off = seg + 1, segs.data_start(seg + 1)

    def _run(self):
        self._dicts_first()
        segs = self.segs
        seg, off = self.start
        expected = self.start_seq
        txn = None
        if self.carry is not None:
            txn = {"first_seq": None, "max_first": self.carry, "frames": [], "path": None, "off": None}
        self.end_pos = pack_pos(seg, off)
        stopped = False
        while not stopped:
            path = segs.path(seg)
            data = segs.data(seg)
            mark = segs.mark if seg == segs.last else None       # None: version 1, or not the last
            if off == segs.data_start(seg) and segs.first_seq(seg) != expected:
                raise Damage(path, 24, f"corruption: the segment header says its first sequence number is "
                                       f"{segs.first_seq(seg)}, the log before it ends before {expected}")
            if off > len(data):
                raise Damage(path, off, f"the walk starts at offset {off}, past the segment's end ({len(data)})")
            while off < len(data):
                if mark is not None and off == mark.end:
                    self._at_mark(path, mark, expected)
                fields, why = decode_frame_header(data, off)
                if fields is not None:
                    first_seq = fields[4]
                    if first_seq != expected:
                        why = f"frame first_seq {first_seq}, expected {expected}"
                    else:
                        why = self._txn_rule(fields, txn, data, off, path)
                    end = off + FRAME_HDR + fields[0]
                    if why is None and mark is not None and off < mark.end < end:
                        why = f"the frame [{off}, {end}) runs across the durable mark's end {mark.end}"
                if why is not None and seg == segs.last and segs.version(seg) >= ZERO_TAIL_VERSION \
                        and not data[off:].strip(b"\0"):
                    # log.md, "Version 4": only zeros from a frame boundary to the end of the last
                    # segment: its preallocated space, the clean end of the log (checked against
                    # the mark below, as any end)
                    break
                if why is not None:
                    self._bad_frame(seg, data, off, expected, why, fields)
                    stopped = True
                    break
                fr = make_frame(path, seg, off, fields)
                fr.payload = decode_payload(fr, data)
                if fr.kind == KIND_ENTRY or self.seen_entry:
                    self._entry_rule(fr)
                    expected += fr.count
                    off = fr.end
                    if self.entry is None:
                        self.end_pos = fr.end_pos
                    continue
                if fr.flags & 1:
                    if txn is None:
                        txn = {"first_seq": fr.first_seq, "frames": [], "path": path, "off": off}
                    txn["frames"].append(fr)
                elif fr.kind == KIND_COMMIT:
                    for f in txn["frames"]:
                        self._apply(f)
                    self._apply(fr)
                    txn = None
                else:
                    self._apply(fr)
                expected += fr.count
                off = fr.end
                if txn is None:
                    self.end_pos = fr.end_pos
            if not stopped and mark is not None and off <= mark.end:
                if off < mark.end:
                    raise Damage(path, off, f"corruption: the log ends at offset {off}, before the durable "
                                            f"mark's end {mark.end} ({mark.describe()})")
                self._at_mark(path, mark, expected)
            if stopped or seg == segs.last:
                break
            seg, off = seg + 1, segs.data_start(seg + 1)
            if txn is None:
                self.end_pos = pack_pos(seg, off)
        if self.entry is not None:
            # an entry short of its data frames at the end of the log: a torn tail, cut at its frame
            e = self.entry
            if self.torn is None:
                self.torn = (e["path"], e["off"], "a Raft entry without all its data frames")
            self.end_pos = pack_pos(e["seg"], e["off"])
            expected = e["seq"]
            self.entry = None
        if txn is not None:
            if txn["first_seq"] is None:
                where = self.torn[:2] if self.torn else (segs.path(segs.last), len(segs.data(segs.last)))
                raise Damage(where[0], where[1],
                             "corruption: the index chain ends inside an import transaction (allowed only when "
                             "it was committed), but the log after it holds no commit"
                             + (f" ({self.torn[2]})" if self.torn else ""))
            # durability.md rule 3: an import still open at the end is cut back to its first frame
            self.cut_txn = (txn["path"], txn["off"], txn["first_seq"])
            expected = txn["first_seq"]
        self.next_seq = expected

    def _entry_rule(self, fr):
        """log.md, "Raft entry": from the first entry frame on, every frame belongs to an entry. A
        checksum-valid frame that breaks the rule is corruption wherever it is."""
        def bad(why):
            raise Damage(fr.path, fr.off, f"corruption: {why}")
        if fr.kind == KIND_ENTRY:
            head = fr.payload
            if self.entry is not None:
                bad("a Raft entry frame inside the previous entry's data")
            if self.entries and head["index"] <= self.entries[-1][0]:
                bad(f"Raft entry {head['index']} after entry {self.entries[-1][0]}")
            self.seen_entry = True
            if head["frames"] == 0:
                self._whole(head["index"], head["committed"], [fr])
            else:
                self.entry = {"index": head["index"], "left": head["frames"], "bytes": head["data_len"],
                              "frames": [fr], "path": fr.path, "seg": fr.seg, "off": fr.off, "seq": fr.first_seq,
                              "committed": head["committed"]}
            return
        e = self.entry
        if e is None:
            bad("a frame outside any Raft entry")
        if fr.kind not in (KIND_JOBS, KIND_SPIDER, KIND_CATALOG, KIND_DICT) or fr.flags & FLAG_TXN:
            bad(f"a {KIND_NAMES[fr.kind]} frame (flags 0x{fr.flags:02x}) cannot be an entry's data")
        size = FRAME_HDR + fr.length
        if size > e["bytes"]:
            bad("a Raft entry's data frames run past its data length")
        e["bytes"] -= size
        e["left"] -= 1
        e["frames"].append(fr)
        if e["left"] == 0:
            if e["bytes"]:
                bad("a Raft entry's data frames end before its data length")
            self._whole(e["index"], e["committed"], e["frames"])
            self.entry = None

    def _whole(self, index, committed, frames):
        """An entry with all its frames; only whole entries' commit points count (a torn one is cut)."""
        self.entries.append((index, frames))
        if committed is not None:
            self.committed = max(self.committed or 0, committed)

    def _apply_entries(self):
        for index, frames in self.entries:        # each entry: its entry frame, then its data frames
            if self.committed is None or index > self.committed:
                self.unapplied += 1
                continue
            for fr in frames:
                self._apply(fr)

    def _txn_rule(self, fields, txn, data, off, path):
        """log.md, import transactions: the reason this frame is invalid, or None."""
        ln, kind, flags, _, _, _ = fields
        if kind == KIND_ENTRY and (flags or txn is not None):
            return "a Raft entry frame with flags, or inside an import transaction"
        if flags & FLAG_RELOCATED and (kind != KIND_JOBS or flags & FLAG_TXN):
            return (f"{KIND_NAMES[kind]} frame carries the relocation flag with flags 0x{flags:02x} (only a jobs "
                    f"frame outside a transaction may)")
        if flags & 1:
            if kind not in (KIND_JOBS, KIND_SPIDER):
                return f"{KIND_NAMES[kind]} frame carries the transaction flag (only jobs and spider frames may)"
            return None
        if kind == KIND_COMMIT:
            if txn is None:
                return "commit frame while no import transaction is open"
            if ln != 8:
                raise Damage(path, off, f"corruption: the commit frame's CRC matches but its payload is {ln} "
                                        f"bytes, must be 8")
            first = struct.unpack_from("<Q", data, off + FRAME_HDR)[0]
            if txn["first_seq"] is None:
                if first > txn["max_first"]:
                    return (f"commit names first sequence {first}; the transaction open where the walk began "
                            f"began at most at {txn['max_first']}")
            elif first != txn["first_seq"]:
                return f"commit names first sequence {first}, the open transaction began at {txn['first_seq']}"
            return None
        if txn is not None:
            began = txn["first_seq"] if txn["first_seq"] is not None else "before the index chain's end"
            return f"frame without the transaction flag while an import transaction is open (began at {began})"
        return None

    def _at_mark(self, path, mark, expected):
        """The walk is at the last segment's durable_end: the frames before it end where the mark
        says, with sequence next_seq - 1 (log.md: the frame at durable_end has sequence next_seq)."""
        if expected != mark.next_seq:
            raise Damage(path, mark.end, f"corruption: the durable mark says the frame at {mark.end} has sequence "
                                         f"{mark.next_seq}, the frames before it end before {expected} "
                                         f"({mark.describe()})")

    def _bad_frame(self, seg, data, off, expected, why, fields):
        """durability.md recovery rules 1, 2 and 4 (read-only), and media assumption 4.
        `fields`: the bad frame's header when it decodes and its CRC matches, else None."""
        path = self.segs.path(seg)
        if seg != self.segs.last:
            raise Damage(path, off, f"corruption: bad frame in a segment that is not the last ({why})"
                                    f"{_record_notes(data, off)}; segments before the last were synced whole")
        note = _record_notes(data, off)
        if self.proof[0] >= expected:
            raise Damage(path, off, f"corruption: bad frame ({why}){note}; index file {self.proof[1]} covers "
                                    f"sequence {self.proof[0]} >= {expected}, so it was durable")
        mark = self.segs.mark
        if mark is not None:
            # version 2: the mark decides; nothing after `off` is read
            if off < mark.end:
                raise Damage(path, off, f"corruption: bad frame ({why}){note} before the durable mark's end "
                                        f"({mark.describe()})")
            if off == mark.end and fields is not None and fields[4] != mark.next_seq:
                raise Damage(path, off, f"corruption: the frame at the durable mark's end has sequence "
                                        f"{fields[4]}, the mark says {mark.next_seq} ({mark.describe()})")
        else:
            self._evidence(path, data, off, expected, why, note)
        self.torn = (path, off, why)

    def _evidence(self, path, data, off, expected, why, note):
        """Version 1, rule 2: corruption when a valid frame after the bad one (header decodes, CRC
        matches) has first_seq >= s and durable_seq >= s. The search starts at the bad frame's end when
        its header decodes with first_seq = s, else at off + 1, and skips every frame it finds: it
        never looks inside the extent of a decodable header."""
        hdr, _ = header_fields(data, off)
        p = off + FRAME_HDR + hdr[0] if hdr is not None and hdr[4] == expected else off + 1
        while True:
            m = _CANDIDATE.search(data, p)
            if m is None:
                return
            o = m.start()
            fields, _ = decode_frame_header(data, o)
            if fields is None:
                p = o + 1
                continue
            if fields[4] >= expected and fields[5] >= expected:
                raise Damage(path, off, f"corruption: bad frame ({why}){note}; the frame at offset {o} "
                                        f"(first_seq {fields[4]}) says sequence {fields[5]} >= {expected} was durable")
            p = o + FRAME_HDR + fields[0]

    def _apply(self, fr):
        self.frames.append(fr)
        self.frame_at[fr.pos] = fr
        if fr.kind == KIND_JOBS:
            for r in fr.payload:
                if (r.project, r.spider) not in self.spiders.names:
                    raise Damage(fr.path, fr.off, f"corruption: record at offset {r.file_off} "
                                                  f"({r.project}/{r.spider}/{r.job}) names spider {r.spider} of "
                                                  f"project {r.project}, which is not registered")
                if r.order_seq > r.seq:
                    raise Damage(fr.path, fr.off, f"corruption: record at offset {r.file_off}: order_seq "
                                                  f"{r.order_seq} is after its own sequence number {r.seq}")
                self.records.append(r)
                self.events.append((r.seq, "job", (r.project, r.spider, r.job)))
        elif fr.kind == KIND_SPIDER:
            project, spider, name = fr.payload
            self.spiders.register(fr.path, fr.off, project, spider, name, False)
            self.events.append((fr.first_seq, "spider", (project, spider, name)))
        elif fr.kind == KIND_CATALOG:
            for project, spider, nxt, name, _ in fr.payload:
                self.spiders.register(fr.path, fr.off, project, spider, name, True)
            self.events.append((fr.first_seq, "catalog", [(p, s, n, nm) for p, s, n, nm, _ in fr.payload]))

    def catalog_known_from(self):
        """The sequence number of the walk's first catalog frame (before it, a shortened log does
        not know every spider); past the end when it has none."""
        return next((s for s, kind, _ in self.events if kind == "catalog"), self.next_seq)

    def catalog_at(self, seq):
        """{(project, spider): (name, next job id)} as known at sequence number `seq` (a full walk):
        next job id = max(the latest catalog's, 1 + the highest job id seen)."""
        names, maxjob, cnext = {}, {}, {}
        for s, kind, d in self.events:
            if s > seq:
                break
            if kind == "spider":
                names[(d[0], d[1])] = d[2]
            elif kind == "catalog":
                cnext = {}
                for p, sp, nxt, nm in d:
                    names[(p, sp)] = nm
                    cnext[(p, sp)] = nxt
            else:
                k = (d[0], d[1])
                maxjob[k] = max(maxjob.get(k, 0), d[2])
        return {k: (n, max(cnext.get(k, 0), maxjob.get(k, 0) + 1)) for k, n in names.items()}


def _record_notes(data, off):
    """For a frame whose CRC fails: name the records in it that fail their own CRC."""
    try:
        ln, kind, count = struct.unpack_from("<I", data, off + 4)[0], data[off + 8], \
            struct.unpack_from("<I", data, off + 12)[0]
    except (struct.error, IndexError):
        return ""
    if kind != KIND_JOBS or ln > MAX_FRAME_LEN:
        return ""
    p, end, bad = off + FRAME_HDR, min(len(data), off + FRAME_HDR + ln), []
    for _ in range(min(count, 1 << 16)):
        if p + REC_HDR > end:
            break
        bl, crc = struct.unpack_from("<II", data, p)
        bl &= ~COMPACT
        if p + REC_HDR + bl > end:
            bad.append(f"{p} (body_len {bl} runs past the frame)")
            break
        if masked_crc(data[p + REC_HDR:p + REC_HDR + bl]) != crc:
            bad.append(str(p))
        p += REC_HDR + bl
    return f"; the record at offset {', '.join(bad)} fails its own CRC" if bad else ""


# --------------------------------------------------------------------------- index files

class Posting:
    """A decoded posting list: sorted doc ids."""
    __slots__ = ("docs", "start", "end")


def decode_packed(b, off, n, what):
    """A packed column of n values at section offset `off` (index.md, "Packed column");
    returns (values, end offset)."""
    nb = (n + PACK_BLOCK - 1) // PACK_BLOCK
    b.need(off, PACK_HDR * nb, f"{what} block headers")
    vals = []
    expect = PACK_HDR * nb                   # data offsets count from the column's start
    for k in range(nb):
        ho = off + PACK_HDR * k
        base, slope, doff, width = b.un("<QqIB", ho, f"{what} block {k} header")
        if any(b.raw(ho + 21, 3, f"{what} block {k} header")):
            b.fail(ho + 21, f"{what}: block {k} header reserved bytes are not zero")
        if width > 64:
            b.fail(ho + 20, f"{what}: block {k} has width {width} (at most 64)")
        if doff != expect:
            b.fail(ho + 16, f"{what}: block {k} data at {doff}, expected {expect} (back to back after the "
                            f"headers)")
        c = min(PACK_BLOCK, n - PACK_BLOCK * k)
        dlen = (c * width + 7) // 8
        data = int.from_bytes(b.raw(off + doff, dlen, f"{what} block {k} data"), "little")
        mask = (1 << width) - 1
        for j in range(c):
            r = (data >> (j * width)) & mask
            vals.append((base + ((slope * j) >> 32) + r) % (1 << 64))   # >> floors in Python
        expect = doff + dlen
    return vals, off + expect


def decode_posting(sec, off, n_docs, what, version=2):
    """Roaring-style posting list at section offset `off` (index.md, "Posting list")."""
    if version >= 3:
        card = sec.u32(off, f"{what} header")
        if card < 1:
            sec.fail(off, f"{what}: empty posting list")
        if card <= FLAT_MAX:
            docs = list(sec.un(f"<{card}I", off + 4, f"{what} flat list"))
            for j in range(1, card):
                if docs[j] <= docs[j - 1]:
                    sec.fail(off + 4 + 4 * j, f"{what}: flat list not strictly ascending")
            if docs[-1] >= n_docs:
                sec.fail(off, f"{what}: doc {docs[-1]} is past the section's {n_docs} docs")
            p = Posting()
            p.docs, p.start, p.end = docs, off, off + 4 + 4 * card
            return p
    card, c = sec.un("<II", off, f"{what} header")
    if card < 1:
        sec.fail(off, f"{what}: empty posting list")
    if c < 1 or c > 65536:
        sec.fail(off + 4, f"{what}: {c} containers")
    sec.need(off, 8 + 12 * c, f"{what} container directory")
    docs = []
    total = 0
    prev_block = -1
    expect_data = off + 8 + 12 * c           # data lie back to back right after the directory
    for i in range(c):
        eo = off + 8 + 12 * i
        block, kind, ccard, doff = sec.un("<HHII", eo, f"{what} container {i}")
        if block <= prev_block:
            sec.fail(eo, f"{what}: container blocks not strictly ascending ({prev_block} then {block})")
        prev_block = block
        if ccard < 1:
            sec.fail(eo + 4, f"{what}: empty container")
        base = block << 16
        dpos = off + doff
        if dpos != expect_data:
            sec.fail(eo + 8, f"{what}: container {i} data at offset {doff}, expected {expect_data - off} "
                             f"(data follow the directory back to back)")
        if version >= 3:
            # kind is the bitmap's word count (0: an array); a bitmap exactly when cardinality > 4 × w,
            # w = (largest low 16 bits // 64) + 1, its last word not zero
            words = kind
            if words == 0:
                vals = sec.un(f"<{ccard}H", dpos, f"{what} array container {i}")
                for j in range(1, ccard):
                    if vals[j] <= vals[j - 1]:
                        sec.fail(dpos + 2 * j, f"{what}: array container not strictly ascending")
                if ccard > 4 * (vals[-1] // 64 + 1):
                    sec.fail(eo + 2, f"{what}: array container of {ccard} docs up to {vals[-1]} should be a bitmap")
                docs.extend(base + v for v in vals)
                expect_data = dpos + 2 * ccard
            elif words <= 1024:
                ws = sec.un(f"<{words}Q", dpos, f"{what} bitmap container {i}")
                if ws[-1] == 0:
                    sec.fail(dpos + 8 * (words - 1), f"{what}: bitmap container's last word is zero")
                if ccard <= 4 * words:
                    sec.fail(eo + 2, f"{what}: bitmap container of {words} words holds only {ccard} docs")
                cnt = 0
                for w, word in enumerate(ws):
                    while word:
                        low = word & -word
                        docs.append(base + (w << 6) + low.bit_length() - 1)
                        word ^= low
                        cnt += 1
                if cnt != ccard:
                    sec.fail(eo + 4, f"{what}: bitmap container holds {cnt} docs, its cardinality says {ccard}")
                expect_data = dpos + 8 * words
            else:
                sec.fail(eo + 2, f"{what}: bitmap container of {words} words (at most 1024)")
        elif kind == 0:
            if ccard > 4096:
                sec.fail(eo + 4, f"{what}: array container with cardinality {ccard} > 4096")
            vals = sec.un(f"<{ccard}H", dpos, f"{what} array container {i}")
            for j in range(1, ccard):
                if vals[j] <= vals[j - 1]:
                    sec.fail(dpos + 2 * j, f"{what}: array container not strictly ascending")
            docs.extend(base + v for v in vals)
            expect_data = dpos + 2 * ccard
        elif kind == 1:
            if ccard <= 4096:
                sec.fail(eo + 4, f"{what}: bitmap container with cardinality {ccard} <= 4096")
            words = sec.un("<1024Q", dpos, f"{what} bitmap container {i}")
            cnt = 0
            for w, word in enumerate(words):
                while word:
                    low = word & -word
                    docs.append(base + (w << 6) + low.bit_length() - 1)
                    word ^= low
                    cnt += 1
            if cnt != ccard:
                sec.fail(eo + 4, f"{what}: bitmap container holds {cnt} docs, its cardinality says {ccard}")
            expect_data = dpos + 8192
        else:
            sec.fail(eo + 2, f"{what}: unknown container kind {kind}")
        total += ccard
    if total != card:
        sec.fail(off, f"{what}: containers hold {total} docs, the list's cardinality says {card}")
    if docs[-1] >= n_docs:
        sec.fail(off, f"{what}: doc {docs[-1]} is past the section's {n_docs} docs")
    p = Posting()
    p.docs, p.start, p.end = docs, off, expect_data
    return p


class Section:
    __slots__ = ("project", "n", "ts", "seq", "key", "loc", "sorted_keys", "by_key", "terms")


def decode_section(b, project, n_docs, version):
    """A project's section; b is a Buf over exactly the section's bytes (index.md)."""
    what = f"section of project {project}"
    proj, n, t, z = b.un("<IIII", 0, f"{what} header")
    offs = b.un("<7Q", 16, f"{what} header")
    if proj != project:
        b.fail(0, f"{what}: section header names project {proj}")
    if n != n_docs:
        b.fail(4, f"{what}: section header says {n} docs, its directory entry {n_docs}")
    if z != 0:
        b.fail(12, f"{what}: reserved field is not zero")
    if version >= 3:
        return decode_section_v3(b, project, n, t, offs, version)
    # the builder writes the columns in the order of the table, then pads to 8, then the dictionary
    names = ("ts", "seq", "key", "loc", "sorted keys", "by_key")
    widths = (8, 8, 8, 8, 8, 4)
    cols = []
    at = SECTION_HDR
    for i, name in enumerate(names):
        o = offs[i]
        if o != at:
            b.fail(16 + 8 * i, f"{what}: {name} column at {o}, expected {at} (columns follow the header "
                               f"in the order of the table)")
        b.need(o, widths[i] * n, f"{what} {name} column")
        cols.append(b.un(f"<{n}{'I' if widths[i] == 4 else 'Q'}", o, f"{what} {name} column"))
        at = o + widths[i] * n
    ts, seq, key, loc, skeys, by_key = cols
    if any(b.raw(at, align8(at) - at, f"{what} padding")):
        b.fail(at, f"{what}: non-zero padding after the columns")
    s = Section()
    s.project, s.n, s.ts, s.seq, s.key, s.loc, s.sorted_keys, s.by_key = project, n, ts, seq, key, loc, skeys, by_key
    # docs in listing order: (ts, order_seq) strictly descending
    for d in range(1, n):
        if (ts[d], seq[d]) >= (ts[d - 1], seq[d - 1]):
            b.fail(offs[0] + 8 * d, f"{what}: docs {d - 1} and {d} are not in listing order "
                                    f"((ts, seq) ({ts[d - 1]}, {seq[d - 1]}) then ({ts[d]}, {seq[d]}))")
    for d in range(n):
        if key[d] >> 32 == 0 or key[d] & 0xFFFFFFFF == 0:
            b.fail(offs[2] + 8 * d, f"{what}: doc {d} key has a zero spider or job id")
    for i in range(n):
        if i and skeys[i] <= skeys[i - 1]:
            b.fail(offs[4] + 8 * i, f"{what}: sorted keys not strictly ascending at {i}")
        d = by_key[i]
        if d >= n or key[d] != skeys[i]:
            b.fail(offs[5] + 4 * i, f"{what}: by_key[{i}] = {d} does not hold sorted key 0x{skeys[i]:016x}")
    # term dictionary
    do = offs[6]
    if do != align8(at):
        b.fail(64, f"{what}: term dictionary at {do}, expected {align8(at)} (after the columns, padded to 8)")
    return decode_terms(b, s, do, t, version, DICT_ENTRY, "<BBHIQ")


def decode_terms(b, s, do, t, version, entry_len, entry_fmt):
    """The term dictionary at `do`, its blob and posting lists (index.md, "Term dictionary")."""
    what = f"section of project {s.project}"
    n, key = s.n, s.key
    b.need(do, entry_len * t, f"{what} term dictionary of {t} entries")
    blob_off = do + entry_len * t
    entries = []
    blob_len = 0
    for i in range(t):
        eo = do + entry_len * i
        field, zero, tl, toff, poff = b.un(entry_fmt, eo, f"{what} dictionary entry {i}")
        if field not in FIELD_NAMES or (field == FIELD_CLOSE_REASON and version < 2) or \
                (field == FIELD_TOKEN and version < 3):
            b.fail(eo, f"{what}: dictionary entry {i} has unknown field {field} (index version {version})")
        if zero:
            b.fail(eo + 1, f"{what}: dictionary entry {i} reserved byte is not zero")
        if toff != blob_len:
            b.fail(eo + 4, f"{what}: dictionary entry {i} term offset {toff}, expected {blob_len} "
                           f"(terms are concatenated in entry order)")
        blob_len += tl
        entries.append((field, tl, toff, poff, eo))
    b.need(blob_off, blob_len, f"{what} term blob")
    blob_end = blob_off + blob_len
    if any(b.raw(blob_end, align8(blob_end) - blob_end, f"{what} padding")):
        b.fail(blob_end, f"{what}: non-zero padding after the term blob")
    terms = {}
    prev = None
    at = align8(blob_end)                    # posting lists: packed one after another, not aligned
    for i, (field, tl, toff, poff, eo) in enumerate(entries):
        term = b.raw(blob_off + toff, tl, f"{what} term {i}")
        k = (field, term)
        if prev is not None and k <= prev:
            b.fail(eo, f"{what}: dictionary not in (field, term bytes) order at entry {i}")
        prev = k
        tw = f"{what} {FIELD_NAMES[field]} term {term!r}"
        if field == FIELD_STATE and (tl != 1 or term[0] > PURGED):
            b.fail(blob_off + toff, f"{tw}: a state term is one byte 0..4")
        if field == FIELD_SPIDER and (tl != 4 or term == b"\0\0\0\0"):
            b.fail(blob_off + toff, f"{tw}: a spider term is a u32 id >= 1")
        if field == FIELD_PRIORITY and tl != 8:
            b.fail(blob_off + toff, f"{tw}: a priority term is an i64")
        if field in (FIELD_TAG, FIELD_UNIQUE, FIELD_CLOSE_REASON, FIELD_TOKEN):
            b.utf8(blob_off + toff, tl, tw)
        if field == FIELD_CLOSE_REASON and tl > MAX_CLOSE_REASON:
            b.fail(blob_off + toff, f"{tw}: a close_reason term is at most {MAX_CLOSE_REASON} bytes")
        if poff != at:
            b.fail(eo + 8, f"{tw}: posting list at {poff}, expected {at} (lists are packed one after "
                           f"another, in dictionary order, after the blob padded to 8)")
        p = decode_posting(b, poff, n, f"{tw} posting list", version)
        at = p.end
        terms[k] = p
    if at != len(b):
        b.fail(at, f"{what}: {len(b) - at} bytes after the last posting list")
    s.terms = terms
    # every doc in exactly one list of its state, spider and priority; spider lists agree with the keys;
    # unique lists hold pending and running docs only
    for field in (FIELD_STATE, FIELD_SPIDER, FIELD_PRIORITY):
        seen = [0] * n
        for (f, term), p in terms.items():
            if f == field:
                for d in p.docs:
                    seen[d] += 1
                    if f == FIELD_SPIDER and key[d] >> 32 != struct.unpack("<I", term)[0]:
                        b.fail(p.start, f"{what}: doc {d} is in the list of spider "
                                        f"{struct.unpack('<I', term)[0]}, its key says {key[d] >> 32}")
        for d in range(n):
            if seen[d] != 1:
                b.fail(do, f"{what}: doc {d} is in {seen[d]} {FIELD_NAMES[field]} posting lists, must be 1")
    active = set()
    for st in (0, 1):
        p = terms.get((FIELD_STATE, bytes([st])))
        if p:
            active.update(p.docs)
    for (f, term), p in terms.items():
        if f == FIELD_UNIQUE and not set(p.docs) <= active:
            b.fail(p.start, f"{what}: unique term {term!r} posts a doc that is neither pending nor running")
    # a doc is in at most one close_reason list
    seen = set()
    for (f, term), p in terms.items():
        if f == FIELD_CLOSE_REASON:
            if seen & set(p.docs):
                b.fail(p.start, f"{what}: close_reason term {term!r} posts a doc another close_reason list holds")
            seen.update(p.docs)
    return s


def decode_section_v3(b, project, n, t, offs, version):
    """Version 3: six packed columns back to back after the header, padded to 8, then the
    dictionary of 12-byte entries (index.md, "Section header", "Packed column")."""
    what = f"section of project {project}"
    names = ("ts", "seq", "spider", "job", "loc", "by_key")
    cols = []
    at = SECTION_HDR
    for i, name in enumerate(names):
        if offs[i] != at:
            b.fail(16 + 8 * i, f"{what}: {name} column at {offs[i]}, expected {at} (columns follow the header "
                               f"in the order of the table, back to back)")
        vals, at = decode_packed(b, at, n, f"{what} {name} column")
        cols.append(vals)
    ts, seq, spider, job, loc, by_key = cols
    for d in range(n):
        if spider[d] >> 32 or job[d] >> 32:
            b.fail(offs[2], f"{what}: doc {d} spider or job id above 32 bits")
    key = [(spider[d] << 32) | job[d] for d in range(n)]
    if any(b.raw(at, align8(at) - at, f"{what} padding")):
        b.fail(at, f"{what}: non-zero padding after the columns")
    s = Section()
    s.project, s.n, s.ts, s.seq, s.key, s.loc, s.by_key = project, n, ts, seq, key, loc, by_key
    for d in range(1, n):
        if (ts[d], seq[d]) >= (ts[d - 1], seq[d - 1]):
            b.fail(offs[0], f"{what}: docs {d - 1} and {d} are not in listing order "
                            f"((ts, seq) ({ts[d - 1]}, {seq[d - 1]}) then ({ts[d]}, {seq[d]}))")
    for d in range(n):
        if key[d] >> 32 == 0 or key[d] & 0xFFFFFFFF == 0:
            b.fail(offs[2], f"{what}: doc {d} key has a zero spider or job id")
    skeys = []
    for i in range(n):
        d = by_key[i]
        if d >= n:
            b.fail(offs[5], f"{what}: by_key[{i}] = {d} is past the section's {n} docs")
        skeys.append(key[d])
        if i and skeys[i] <= skeys[i - 1]:
            b.fail(offs[5], f"{what}: keys not strictly ascending through by_key at {i}")
    s.sorted_keys = skeys
    do = offs[6]
    if do != align8(at):
        b.fail(64, f"{what}: term dictionary at {do}, expected {align8(at)} (after the columns, padded to 8)")
    return decode_terms(b, s, do, t, version, DICT_ENTRY_V3, "<BBHII")


class IndexFile:
    def __init__(self, path, name_lo, name_hi):
        self.path, self.name_lo, self.name_hi = path, name_lo, name_hi
        self.damage = None        # Damage: not usable
        self.stale = None         # str: valid but not matching the log / not in the chain
        self.sections = {}        # project -> Section
        self.catalog = []
        self.lo = self.hi = self.log_end = self.last_frame = self.ndocs = self.version = None

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
    """index.md, "Checks before use", plus the layout rules of "File layout"."""
    data = read_file(ix.path)
    b = Buf(data, ix.path)
    if len(data) < IDX_HDR + IDX_FOOTER:
        b.fail(0, f"index file is {len(data)} bytes, less than header + footer ({IDX_HDR + IDX_FOOTER})")
    fo = len(data) - IDX_FOOTER
    if data[0:8] != IDX_MAGIC:
        b.fail(0, "bad header magic (expected \"JOBQIDX\\0\")")
    if data[fo + 40:fo + 48] != IDX_MAGIC:
        b.fail(fo + 40, "bad footer magic (expected \"JOBQIDX\\0\")")
    ver = b.u32(8, "version")
    if ver not in INDEX_VERSIONS:
        b.fail(8, f"unknown index version {ver} (this reader knows versions {INDEX_VERSIONS})")
    fver = b.u32(fo + 32, "footer version")
    if fver != ver:
        b.fail(fo + 32, f"index footer version {fver}, the header says {ver}")
    ix.version = ver
    dir_off, dir_len, cat_off, cat_len = b.un("<4Q", fo, "footer")
    for name, o, ln, fld in (("directory", dir_off, dir_len, fo), ("catalog", cat_off, cat_len, fo + 16)):
        if o < IDX_HDR or o + ln > fo:
            b.fail(fld, f"{name} [{o}, {o + ln}) is not between the header and the footer")
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
        b.fail(24, f"header range {lo}..{hi} does not match the file name ({ix.name_lo}..{ix.name_hi})")
    if log_end >> 32 != last_frame >> 32 or (log_end & 0xFFFFFFFF) < (last_frame & 0xFFFFFFFF) + FRAME_HDR:
        b.fail(40, f"log_end {fmt_pos(log_end)} is not in last_frame's segment after its header "
                   f"({fmt_pos(last_frame)})")
    ix.lo, ix.hi, ix.log_end, ix.last_frame, ix.ndocs = lo, hi, log_end, last_frame, ndocs
    # directory
    n = b.u32(dir_off, "directory count")
    if b.u32(dir_off + 4, "directory reserved") != 0:
        b.fail(dir_off + 4, "directory reserved field is not zero")
    if dir_len != 8 + 32 * n:
        b.fail(fo + 8, f"directory length {dir_len} does not fit its {n} entries ({8 + 32 * n})")
    prev_project = 0
    at = IDX_HDR
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
        if soff != align8(at) or soff + slen > fo:
            b.fail(eo + 8, f"directory entry {i}: section [{soff}, {soff + slen}) is not inside the file "
                           f"at the first 8-aligned offset after the previous part ({align8(at)})")
        comp = masked_crc(data[soff:soff + slen])
        if comp != scrc:
            b.fail(eo + 24, f"section of project {project} [{soff}, {soff + slen}): CRC mismatch "
                            f"(stored 0x{scrc:08x}, computed 0x{comp:08x})")
        entries.append((project, docs, soff, slen))
        total += docs
        at = soff + slen
    if total != ndocs:
        b.fail(56, f"header says {ndocs} docs, the directory {total}")
    # file layout: header, sections, catalog, directory, footer; gaps are zero padding to the next 8
    for start, end, what in ((cat_off, cat_off + cat_len, "catalog"), (dir_off, dir_off + dir_len, "directory"),
                             (fo, len(data), "footer")):
        if start != align8(at):
            b.fail(start, f"the {what} starts at {start}, expected {align8(at)} (header, sections, catalog, "
                          f"directory, footer, each at the next 8-aligned offset)")
        at = end
    gaps = [(IDX_HDR, entries[0][2] if entries else cat_off)]
    gaps += [(entries[i][2] + entries[i][3], entries[i + 1][2]) for i in range(len(entries) - 1)]
    gaps += [(entries[-1][2] + entries[-1][3] if entries else IDX_HDR, cat_off),
             (cat_off + cat_len, dir_off), (dir_off + dir_len, fo)]
    for s, e in gaps:
        if any(data[s:e]):
            b.fail(s, "non-zero byte in the padding between parts")
    # catalog: the same encoding as a catalog frame, ascending by (project, spider id)
    cat = b.sub(cat_off, cat_len, "catalog")
    if ver >= 4:
        # index.md, "Catalog": version 4 continues with u32 d, d x (u32 id, u32 len, bytes), ids ascending
        ix.catalog, o = parse_catalog_entries(cat, "index catalog", rest=True)
        d = cat.u32(o, "index catalog: dictionary count")
        o += 4
        last = 0
        for _ in range(d):
            dict_id, n = cat.un("<II", o, "index catalog: dictionary")
            if dict_id <= last:
                cat.fail(o, f"index catalog: dictionary ids not ascending ({dict_id} after {last})")
            register_dict(cat, o, dict_id, n, "index catalog")
            last = dict_id
            o += 8 + n
        if o != len(cat):
            cat.fail(o, f"index catalog: {len(cat) - o} bytes after the dictionaries")
    else:
        ix.catalog = parse_catalog_entries(cat, "index catalog")
    prev = (0, 0)
    for project, spider, nxt, name, o in ix.catalog:
        if (project, spider) <= prev:
            b.fail(cat_off + o, f"index catalog not strictly ascending by (project, spider id) at "
                                f"{project}/{spider}")
        prev = (project, spider)
    names = {(p, s): nm for p, s, _, nm, _ in ix.catalog}
    by_name = {(p, nm) for p, s, _, nm, _ in ix.catalog}
    if len(by_name) != len(names):
        b.fail(cat_off, "index catalog gives one name to two spiders of a project")
    for project, docs, soff, slen in entries:
        s = decode_section(Buf(data[soff:soff + slen], ix.path, soff), project, docs, ver)
        for d in range(s.n):
            if (project, s.key[d] >> 32) not in names:
                b.fail(soff, f"section of project {project}: doc {d} names spider {s.key[d] >> 32}, "
                             f"which the file's catalog does not list")
        ix.sections[project] = s


# --------------------------------------------------------------------------- the store (read-only open)

class Store:
    """index.md "Matching index files to the log" and durability.md's recovery rules."""

    def __init__(self, root, min_index_version=1):
        self.root = root
        self.min_index_version = min_index_version   # 2: version-1 files set aside (no close_reason lists)
        self.notes = []
        self.generation, self.log_start = read_current(root)
        self.gen_dir = os.path.join(root, f"gen-{self.generation:016x}")
        if not os.path.isdir(self.gen_dir):
            raise Damage(os.path.join(root, "CURRENT"), 16,
                         f"CURRENT names generation {self.generation}, but {self.gen_dir} does not exist")
        for e in sorted(os.listdir(root)):
            m = GEN_RE.match(e)
            if m and int(m.group(1), 16) != self.generation:
                self.notes.append(f"leftover generation directory {e} ignored (CURRENT names {self.generation})")
        segs, idxs = [], []
        self.reach = read_reach(self.gen_dir)
        for e in sorted(os.listdir(self.gen_dir)):
            if e == "REACH":
                continue
            m = SEG_RE.match(e)
            if m:
                segs.append(int(m.group(1)))
                continue
            m = IDX_RE.match(e)
            if m:
                idxs.append((e, int(m.group(1), 16), int(m.group(2), 16)))
                continue
            self.notes.append(f"{'temp' if e.endswith('.tmp') else 'unknown'} file {e} ignored")
        if segs and self.log_start is not None and min(segs) > self.log_start:
            # layout.md: every segment from the log start on is the log's
            raise Damage(os.path.join(self.gen_dir, f"log-{self.log_start:010d}.jql"), 0,
                         f"log segment {self.log_start} is missing (CURRENT says the log starts there)")
        if segs and self.reach is not None and max(segs) < self.reach:
            # layout.md, "REACH": the log's newest segments are gone
            raise Damage(os.path.join(self.gen_dir, f"log-{max(segs) + 1:010d}.jql"), 0,
                         f"log segment {max(segs) + 1} is missing (REACH says the log reached segment {self.reach})")
        self.segs = Segments(self.gen_dir, self.generation, sorted(segs))
        self.notes += self.segs.notes
        self.log_first = self.segs.first_seq(self.segs.first)    # step 1
        self.indexes = [load_index(os.path.join(self.gen_dir, e), lo, hi, self.generation)
                        for e, lo, hi in idxs]                   # step 2
        valid = [ix for ix in self.indexes if ix.damage is None]
        best = max(valid, key=lambda ix: ix.hi, default=None)
        self.proof = (best.hi, best.fname()) if best else (0, None)
        self._chain()                                            # steps 3 and 4
        self._replay()                                           # steps 5 and 6

    def _probe(self, ix):
        """The frame at `last_frame`, when it is valid, holds `hi_seq` last and ends at `log_end`;
        else (None, why). Only what can be checked without walking the log before it."""
        seg, off = unpack_pos(ix.last_frame)
        if seg not in self.segs:
            return None, f"last_frame {fmt_pos(ix.last_frame)}: no such segment"
        data = self.segs.data(seg)
        if off < self.segs.data_start(seg):
            return None, f"last_frame {fmt_pos(ix.last_frame)} is inside the segment header or mark pages"
        fields, why = decode_frame_header(data, off)
        if fields is None:
            return None, f"no valid frame at last_frame ({fmt_pos(ix.last_frame)}): {why}"
        fr = make_frame(self.segs.path(seg), seg, off, fields)
        if fr.flags & 1 and fr.kind not in (KIND_JOBS, KIND_SPIDER):
            return None, f"the frame at last_frame is a {KIND_NAMES[fr.kind]} frame with the transaction flag"
        if fr.last_seq != ix.hi or fr.first_seq < ix.lo:
            return None, (f"the frame at last_frame holds sequence {fr.first_seq}..{fr.last_seq}, not a last "
                          f"sequence hi_seq {ix.hi} within {ix.lo}..{ix.hi}")
        if fr.end_pos != ix.log_end:
            return None, f"the frame at last_frame ends at {fmt_pos(fr.end_pos)}, not at log_end ({fmt_pos(ix.log_end)})"
        fr.payload = decode_payload(fr, data)                    # corruption when its payload is bad
        return fr, None

    def _begins_in_txn(self, seg, off):
        """log.md, "Import transactions": a log whose first frame carries the transaction flag, or
        is a commit, begins inside an import that may have begun before it (online compaction
        removed the segments before). The carry: its commit may name the log's first sequence
        number or an earlier one."""
        fields, _ = decode_frame_header(self.segs.data(seg), off)
        if fields is not None and (fields[2] & FLAG_TXN or fields[1] == KIND_COMMIT):
            return fields[4]
        return None

    def _chain(self):
        usable = {}
        for ix in self.indexes:
            if ix.damage is not None:
                continue
            if ix.version < self.min_index_version:
                ix.stale = f"index version {ix.version} has no close_reason posting lists"
                continue
            fr, why = self._probe(ix)
            if fr is None:
                ix.stale = why
            else:
                usable[id(ix)] = (ix, fr)
        chain, frames = [], []
        nxt = self.log_first
        while True:
            if not chain:
                # the first file may begin before the log (online compaction removed the segments
                # under its start): largest hi_seq first, then largest lo_seq
                cands = [v for v in usable.values() if v[0].lo <= nxt <= v[0].hi]
                pick = max(cands, key=lambda v: (v[0].hi, v[0].lo), default=None)
            else:
                cands = [v for v in usable.values() if v[0].lo == nxt]
                pick = max(cands, key=lambda v: v[0].hi, default=None)
            if pick is None:
                break
            ix, fr = pick
            chain.append(ix)
            frames.append(fr)
            nxt = ix.hi + 1
        in_chain = {id(ix) for ix in chain}
        for ix, _ in usable.values():
            if id(ix) not in in_chain:
                ix.stale = "not in the chain (superseded by a file covering more, or not reachable from the log's start)"
        self.chain = chain
        self.chain_last_frame = frames[-1] if frames else None

    def _replay(self):
        spiders = Spiders()
        if self.chain:
            last = self.chain[-1]
            for p, s, _, name, _ in last.catalog:
                spiders.register(last.path, 0, p, s, name, True)
            seg, off = unpack_pos(last.log_end)
            fr = self.chain_last_frame
            carry = fr.first_seq if fr.flags & 1 else None
            self.chain_hi = last.hi
            if off == len(self.segs.data(seg)) and seg < self.segs.last:
                seg, off = seg + 1, self.segs.data_start(seg + 1)
        else:
            seg, off, self.chain_hi = self.segs.first, self.segs.data_start(self.segs.first), 0
            carry = self._begins_in_txn(seg, off)
        self.walk = Walk(self.segs, seg, off, self.chain_hi + 1 if self.chain else self.log_first,
                         spiders, self.proof, carry, read_raft_purge(self.root))
        self.names = spiders.names
        tail = {}
        for r in self.walk.records:
            tail[r.key] = r                                      # a higher sequence number replaces
        self.tail = tail
        # superseded docs: a later chain file or the replayed tail holds the same key
        self.superseded = []
        later = {}
        for r in tail.values():
            later.setdefault(r.project, set()).add(r.skey)
        for ix in reversed(self.chain):
            sup = {}
            for project, s in ix.sections.items():
                lk = later.get(project, ())
                sup[project] = {d for d in range(s.n) if s.key[d] in lk}
            self.superseded.insert(0, sup)
            for project, s in ix.sections.items():
                later.setdefault(project, set()).update(s.key)

    # ---- answers

    def live_docs(self):
        """(index file, section, doc) of every unsuperseded doc of the chain."""
        for ix, sup in zip(self.chain, self.superseded):
            for project, s in ix.sections.items():
                for d in range(s.n):
                    if d not in sup[project]:
                        yield ix, s, d

    def read_doc(self, ix, s, d):
        """A chain doc's record, read by its `loc` and verified by its own CRC."""
        r = self.segs.read_record(s.loc[d], f"record of doc {d} of project {s.project} in {ix.fname()}")
        if (r.project, r.skey) != (s.project, s.key[d]) or (r.ts, r.order_seq) != (s.ts[d], s.seq[d]):
            raise Damage(ix.path, 0, f"project {s.project} doc {d}: the record at {fmt_pos(s.loc[d])} is "
                                     f"{r.project}/{r.spider}/{r.job} (ts {r.ts}, order_seq {r.order_seq}); the "
                                     f"columns say spider {s.key[d] >> 32} job {s.key[d] & 0xFFFFFFFF} (ts "
                                     f"{s.ts[d]}, order_seq {s.seq[d]})")
        return r

    def live_records(self):
        out = [self.read_doc(ix, s, d) for ix, s, d in self.live_docs()]
        out.extend(self.tail.values())
        # log.md "tombstone": a purged job answers nowhere
        return [r for r in out if r.state != PURGED]

    def next_jobs(self):
        """{(project, spider): next job id} (log.md "Catalog"): the last chain index's catalog, then
        the replayed frames: max(a catalog frame's next job id, 1 + the highest job id seen)."""
        nxt = {}
        if self.chain:
            for p, s, n, _, _ in self.chain[-1].catalog:
                nxt[(p, s)] = n
        for _, kind, d in self.walk.events:
            if kind == "catalog":
                for p, s, n, _ in d:
                    nxt[(p, s)] = max(nxt.get((p, s), 1), n)
            elif kind == "job":
                nxt[(d[0], d[1])] = max(nxt.get((d[0], d[1]), 1), d[2] + 1)
        return nxt

    def export_lines(self):
        """log.md "Export": per project ascending, a catalog line per spider (ascending ids), then
        the jobs ascending by order_seq."""
        recs = sorted(self.live_records(), key=lambda r: (r.project, r.order_seq, r.spider, r.job))
        nxt = self.next_jobs()
        by_project = {}
        for r in recs:
            name = self.names.get((r.project, r.spider))
            if name is None:
                raise Damage(r.path, r.file_off, f"record {r.project}/{r.spider}/{r.job}: spider {r.spider} of "
                                                 f"project {r.project} is in no catalog or registration")
            by_project.setdefault(r.project, []).append(whole_metadata(r, name))
        out = []
        for project in sorted(set(by_project) | {p for p, _ in self.names}):
            for (p, s) in sorted(k for k in self.names if k[0] == project):
                name = json.dumps(self.names[(p, s)], ensure_ascii=False)
                out.append(f'{{"spider_catalog":{{"project":{p},"id":{s},"name":{name},'
                           f'"next_job":{nxt.get((p, s), 1)}}}}}')
            out.extend(by_project.get(project, []))
        return out

    def listing(self, project):
        """Keys in listing order, merged from the index columns and the replayed tail."""
        streams = []
        for ix, sup in zip(self.chain, self.superseded):
            s = ix.sections.get(project)
            if s is None:
                continue
            purged = s.terms.get((FIELD_STATE, bytes([PURGED])))
            gone = sup[project] | (set(purged.docs) if purged else set())
            streams.append([(-s.ts[d], -s.seq[d], s.key[d]) for d in range(s.n) if d not in gone])
        streams.append(sorted((-r.ts, -r.order_seq, r.skey) for r in self.tail.values()
                              if r.project == project and r.state != PURGED))
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


    def count_reason(self, project, reason):
        """Jobs of any state whose close_reason term is `reason`: the chain's close_reason posting
        lists less superseded docs, plus the tail's records."""
        term = reason.encode()
        n = 0
        for ix, sup in zip(self.chain, self.superseded):
            s = ix.sections.get(project)
            p = s.terms.get((FIELD_CLOSE_REASON, term)) if s else None
            if p:
                n += len(set(p.docs) - sup[project])
        return n + sum(1 for r in self.tail.values() if r.project == project and close_reason_term(r.doc_text) == term)


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
    inner = r.doc_text.strip(" \t\r\n")[1:-1].strip(" \t\r\n")    # the document's fields, byte for byte
    if inner:
        parts.append(inner)
    return "{" + ",".join(parts) + "}"


# --------------------------------------------------------------------------- check

def full_walk(st):
    """Every frame from the start of the log (rule 6: `check` validates every frame)."""
    seg = st.segs.first
    off = st.segs.data_start(seg)
    return Walk(st.segs, seg, off, st.log_first, Spiders(), st.proof, st._begins_in_txn(seg, off))


def verify_index(walk, ix):
    """An index file against the log: the frame at last_frame is the one the walk validated, the
    docs are exactly the newest version of each job of lo..hi, with matching columns and posting
    lists, and the catalog is the log's at hi_seq (next job id rule of index.md).

    A file that begins before the log (durability.md, "Online compaction": it straddled the new
    log start) may also hold docs whose records were in the removed segments: each must be
    superseded by a later record of its job in the log (its relocated copy or a newer version);
    only what the log still holds is checked of them."""
    straddles = ix.lo < walk.start_seq
    fr = walk.frame_at.get(ix.last_frame)
    if fr is None or fr.last_seq != ix.hi or fr.end_pos != ix.log_end:
        return f"the log walked from its start holds no committed frame at last_frame ({fmt_pos(ix.last_frame)}) " \
               f"ending with sequence {ix.hi} at log_end ({fmt_pos(ix.log_end)})"
    first = next((f for f in walk.frames if f.last_seq >= ix.lo), None)
    if not straddles and (first is None or first.first_seq != ix.lo):
        return f"lo_seq {ix.lo} is not the first sequence number of a frame"
    logged = {r.key for r in walk.records}
    newest = {}
    for r in walk.records:
        if r.seq > ix.hi:
            break
        if r.seq >= ix.lo:
            newest[r.key] = r
    by_pos = {r.pos: r for r in newest.values()}
    keys_by_project = {}
    for k in newest:
        keys_by_project.setdefault(k[0], set()).add(k)
    removed = {project: [d for d in range(s.n) if straddles and unpack_pos(s.loc[d])[0] < walk.segs.first]
               for project, s in ix.sections.items()}
    if set(keys_by_project) != {p for p, s in ix.sections.items() if s.n > len(removed[p])}:
        return f"sections for projects {sorted(ix.sections)}; the log's range {ix.lo}..{ix.hi} has jobs of " \
               f"projects {sorted(keys_by_project)}"
    for project, s in ix.sections.items():
        gone = set(removed[project])
        if len(keys_by_project.get(project, ())) != s.n - len(gone):
            return f"project {project}: {s.n - len(gone)} docs in the log, the log's range has " \
                   f"{len(keys_by_project.get(project, ()))} jobs"
        expect_terms = {}
        for d in range(s.n):
            where = f"project {project} doc {d}"
            if d in gone:
                if (project, s.key[d] >> 32, s.key[d] & 0xFFFFFFFF) not in logged:
                    return f"{where}: its record was in a removed segment ({fmt_pos(s.loc[d])}) and no later " \
                           f"record of its job is in the log"
                continue
            r = by_pos.get(s.loc[d])
            if r is None:
                return f"{where}: loc {fmt_pos(s.loc[d])} is not the newest version of a job of the range"
            if r.project != project or r.skey != s.key[d]:
                return f"{where}: loc points at {r.project}/{r.spider}/{r.job}, the key column says spider " \
                       f"{s.key[d] >> 32} job {s.key[d] & 0xFFFFFFFF}"
            if r.ts != s.ts[d] or r.order_seq != s.seq[d]:
                return f"{where}: ts/seq columns ({s.ts[d]}, {s.seq[d]}) disagree with the record ({r.ts}, " \
                       f"{r.order_seq})"
            expect_terms.setdefault((FIELD_STATE, bytes([r.state])), []).append(d)
            expect_terms.setdefault((FIELD_SPIDER, struct.pack("<I", r.spider)), []).append(d)
            for tag in dict.fromkeys(r.tags):
                expect_terms.setdefault((FIELD_TAG, tag.encode()), []).append(d)
            expect_terms.setdefault((FIELD_PRIORITY, struct.pack("<q", r.priority)), []).append(d)
            if r.unique is not None and r.state in (0, 1):
                expect_terms.setdefault((FIELD_UNIQUE, r.unique.encode()), []).append(d)
            reason = close_reason_term(r.doc_text) if ix.version >= 2 else None
            if reason is not None:
                expect_terms.setdefault((FIELD_CLOSE_REASON, reason), []).append(d)
            token = auth_token(r.doc_text) if ix.version >= 3 and r.state == 1 else None
            if token is not None:
                expect_terms.setdefault((FIELD_TOKEN, token), []).append(d)
        got = {k: [d for d in p.docs if d not in gone] for k, p in s.terms.items()}
        got = {k: v for k, v in got.items() if v}
        if got != expect_terms:
            diff = sorted(set(got) ^ set(expect_terms)) or sorted(k for k in got if got[k] != expect_terms[k])
            return f"project {project}: posting lists disagree with the records (first differing term: " \
                   f"{FIELD_NAMES[diff[0][0]]} {diff[0][1]!r})"
    want = walk.catalog_at(ix.hi)
    got = {(p, s): (name, nxt) for p, s, nxt, name, _ in ix.catalog}
    if walk.segs.first > 1 and ix.hi < walk.catalog_known_from():
        # a shortened log: spiders and job ids of the removed segments are known only up to the
        # catalog frame online compaction wrote; what the log shows must be in the file's
        if all(k in got and got[k][0] == nm and got[k][1] >= nx for k, (nm, nx) in want.items()):
            return None
    if got != want:
        return f"catalog {sorted(got.items())} differs from the log's at sequence {ix.hi}: {sorted(want.items())}"
    return None


def cmd_check(root):
    st = Store(root)
    walk = full_walk(st)
    bad = False
    out = [f"generation {st.generation}: {len(st.segs.numbers)} segment(s), {len(walk.frames)} frames, "
           f"sequence {st.log_first}..{walk.next_seq - 1}, {len(walk.records)} job records"]
    versions = [st.segs.version(n) for n in st.segs.numbers]
    out.append(f"segment versions: {versions}")
    if st.segs.mark is not None:
        out.append(f"durable mark of {os.path.basename(st.segs.path(st.segs.last))}: {st.segs.mark.describe()}")
    if walk.torn:
        out.append(f"torn tail (ignored, a writer would cut it): {walk.torn[0]}: offset {walk.torn[1]}: {walk.torn[2]}")
    if walk.cut_txn:
        out.append(f"open import transaction cut back: {walk.cut_txn[0]}: offset {walk.cut_txn[1]} "
                   f"(first sequence {walk.cut_txn[2]})")
    if (walk.next_seq, walk.end_pos) != (st.walk.next_seq, st.walk.end_pos):
        bad = True
        out.append(f"FAILED: the log walked from its start ends at sequence {walk.next_seq} "
                   f"({fmt_pos(walk.end_pos)}), the open after the index chain at {st.walk.next_seq} "
                   f"({fmt_pos(st.walk.end_pos)})")
    for ix in st.indexes:
        if ix.damage is not None:
            bad = True
            out.append(f"DAMAGED index file set aside: {ix.damage}")
            continue
        if ix.hi >= walk.next_seq:
            out.append(f"index file set aside: {ix.fname()}: covers {ix.lo}..{ix.hi}, the log ends before "
                       f"{walk.next_seq}")
            continue
        why = verify_index(walk, ix)
        if why is not None and ix.stale is None:
            bad = True
            out.append(f"DAMAGED index file (disagrees with the log): {ix.path}: {why}")
        elif why is not None:
            out.append(f"index file set aside: {ix.fname()}: {ix.stale}")
        elif ix.stale:
            out.append(f"index file set aside: {ix.fname()}: {ix.stale}")
    for ix in st.chain:
        out.append(f"chain: {ix.fname()} ({ix.lo}..{ix.hi}, {ix.ndocs} docs, projects {sorted(ix.sections)})")
    # the open's answer (index chain + replayed tail) against a replay of the whole log
    newest = {}
    for r in walk.records:
        newest[r.key] = r
    live = st.live_records()
    got = {r.key: r.pos for r in live}
    if len(got) != len(live) or got != {k: r.pos for k, r in newest.items() if r.state != PURGED}:
        bad = True
        out.append("FAILED: the live jobs from the index chain and the tail differ from a replay of the whole log")
    if st.names != walk.spiders.names:
        bad = True
        out.append("FAILED: the spiders from the chain's catalog and the tail differ from the whole log's")
    nsup = sum(len(d) for sup in st.superseded for d in sup.values())
    out.append(f"tail: {len(st.tail)} job(s) after sequence {st.chain_hi}; {nsup} superseded doc(s); "
               f"{len(live)} live job(s)")
    out += [f"note: {n}" for n in st.notes]
    for line in out:
        print(line)
    if bad:
        print("check: FAILED", file=sys.stderr)
        return 1
    print("check: ok")
    return 0


# --------------------------------------------------------------------------- CLI

def parse_state(s):
    if s in STATES[:PURGED]:
        return STATES.index(s)
    raise ValueError(f"unknown state {s!r} (one of {', '.join(STATES[:PURGED])})")


def main(argv):
    if len(argv) < 3 or argv[2] not in ("export", "list", "count", "count-reason", "check", "frames"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    root, cmd, args = argv[1], argv[2], argv[3:]
    try:
        if cmd == "list":
            if len(args) != 1:
                raise ValueError("usage: list PROJECT")
            project = int(args[0])
        elif cmd == "count":
            if len(args) not in (2, 3):
                raise ValueError("usage: count PROJECT STATE [TAG]")
            project, state = int(args[0]), parse_state(args[1])
        elif cmd == "count-reason":
            if len(args) != 2:
                raise ValueError("usage: count-reason PROJECT REASON")
            project = int(args[0])
        elif args:
            raise ValueError(f"{cmd} takes no arguments")
    except ValueError as e:
        print(f"usage error: {e}", file=sys.stderr)
        return 2
    try:
        if cmd == "check":
            return cmd_check(root)
        st = Store(root, 2 if cmd == "count-reason" else 1)
        for ix in st.indexes:
            if ix.damage is not None:
                print(f"warning: index file set aside (rebuilt from the log): {ix.damage}", file=sys.stderr)
        if st.walk.torn:
            print(f"warning: torn tail ignored: {st.walk.torn[0]}: offset {st.walk.torn[1]}: {st.walk.torn[2]}",
                  file=sys.stderr)
        if cmd == "export":
            out = st.export_lines()
        elif cmd == "list":
            out = st.listing(project)
        elif cmd == "count":
            out = [str(st.count(project, state, args[2] if len(args) == 3 else None))]
        elif cmd == "count-reason":
            out = [str(st.count_reason(project, args[1]))]
        else:
            walk = full_walk(st)
            out = [json.dumps({"segment": f.seg, "offset": f.off, "end": f.end, "kind": KIND_NAMES[f.kind],
                               "flags": f.flags, "first_seq": f.first_seq, "count": f.count,
                               "durable_seq": f.durable_seq}) for f in walk.frames]
            if walk.torn:
                out.append(json.dumps({"torn": walk.torn[0], "offset": walk.torn[1], "why": walk.torn[2]}))
            m = st.segs.mark
            if m is not None:
                out.append(json.dumps({"mark": st.segs.last, "slot": m.slot, "epoch": m.epoch,
                                       "durable_end": m.end, "next_seq": m.next_seq}))
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
