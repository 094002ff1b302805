"""Check a /metrics answer (on stdin) strictly: the official Python parser
(prometheus_client.parser.text_string_to_metric_families) must read every line,
and beyond what it enforces, every family must have HELP and a TYPE of counter,
gauge or histogram (no untyped samples), each TYPE once, counters named *_total,
histograms with ascending `le` buckets ending at +Inf equal to _count, and no
sample twice. Exit 0 and print the family count when clean; exit 1 naming the
first problem otherwise."""

import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def fail(message):
    print("BAD METRICS: " + message)
    sys.exit(1)


def check(text):
    if not text.endswith("\n"):
        fail("the answer does not end with a newline")
    lines = text.split("\n")[:-1]
    if any(line.strip() == "" for line in lines):
        fail("a blank line")
    sample_lines = [l for l in lines if not l.startswith("#")]
    type_lines = [l for l in lines if l.startswith("# TYPE ")]
    help_lines = [l for l in lines if l.startswith("# HELP ")]
    other = [l for l in lines if l.startswith("#") and not l.startswith(("# TYPE ", "# HELP "))]
    if other:
        fail("a comment that is neither HELP nor TYPE: " + other[0])
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser's own refusal
        fail("the parser refused it: %r" % (e,))
    if len(type_lines) != len(families) or len(help_lines) != len(families):
        fail("%d families, %d TYPE lines, %d HELP lines" % (len(families), len(type_lines), len(help_lines)))
    seen = set()
    samples = 0
    for f in families:
        if f.type not in ("counter", "gauge", "histogram"):
            fail("family %s has type %s" % (f.name, f.type))
        if not f.documentation:
            fail("family %s has no help" % f.name)
        if f.name in seen:
            fail("family %s twice" % f.name)
        seen.add(f.name)
        keys = set()
        for s in f.samples:
            samples += 1
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in keys:
                fail("sample %s twice" % (key,))
            keys.add(key)
            if f.type == "counter" and s.name != f.name + "_total":
                fail("counter sample %s is not %s_total" % (s.name, f.name))
            if f.type == "gauge" and s.name != f.name:
                fail("gauge sample %s in family %s" % (s.name, f.name))
            if f.type in ("counter", "histogram") and (s.value < 0 or math.isnan(s.value)):
                fail("%s %s is %r" % (f.type, s.name, s.value))
        if f.type == "histogram":
            check_histogram(f)
    if samples != len(sample_lines):
        fail("%d sample lines but the parser read %d samples" % (len(sample_lines), samples))
    return len(families)


def check_histogram(f):
    groups = {}
    for s in f.samples:
        labels = dict(s.labels)
        le = labels.pop("le", None)
        g = groups.setdefault(tuple(sorted(labels.items())), {"buckets": [], "sum": None, "count": None})
        if s.name == f.name + "_bucket":
            if le is None:
                fail("bucket of %s without le" % f.name)
            g["buckets"].append((float(le), s.value))
        elif s.name == f.name + "_sum":
            g["sum"] = s.value
        elif s.name == f.name + "_count":
            g["count"] = s.value
        else:
            fail("histogram %s has a sample %s" % (f.name, s.name))
    for labels, g in groups.items():
        b = g["buckets"]
        if not b or b[-1][0] != math.inf:
            fail("histogram %s%s does not end with le=+Inf" % (f.name, labels))
        if any(b[i][0] >= b[i + 1][0] for i in range(len(b) - 1)):
            fail("histogram %s%s: le not ascending" % (f.name, labels))
        if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
            fail("histogram %s%s: buckets not cumulative" % (f.name, labels))
        if g["count"] is None or g["sum"] is None:
            fail("histogram %s%s lacks _sum or _count" % (f.name, labels))
        if b[-1][1] != g["count"]:
            fail("histogram %s%s: +Inf bucket %r != count %r" % (f.name, labels, b[-1][1], g["count"]))


if __name__ == "__main__":
    print("ok: %d families" % check(sys.stdin.read()))
