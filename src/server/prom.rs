//! The Prometheus text exposition format, version 0.0.4: each metric family
//! as `# HELP` and `# TYPE` lines followed by its samples; histograms as
//! cumulative `_bucket{le="..."}` samples ending with `le="+Inf"`, then `_sum`
//! and `_count`. Help text escapes `\` and newlines; label values escape `\`,
//! `"` and newlines.

use std::fmt::Write as _;

use jobq::histogram::HistogramSnapshot;

/// The `Content-Type` of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A scrape answer being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// A sample value: integers are written exactly.
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(u64::from(v))
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Exposition {
    /// Start a family: its help and type lines. Counter names end in `_total`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "{name}");
        debug_assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "\n# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                debug_assert!(valid_name(k) && !k.starts_with("__"), "{k}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value.into() {
            Value::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::Float(v) => write_float(&mut self.out, v),
        }
        self.out.push('\n');
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram (of a family started with [`Kind::Histogram`]):
    /// observed values and bounds are divided by `divisor` (1e9 for ns in
    /// seconds: a division, so that bounds print as written, 0.0005 not 0.0005000000000000001).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot, divisor: f64) {
        let bucket = format!("{name}_bucket");
        let mut le = String::new();
        for (bound, n) in h.bounds.iter().zip(&h.cumulative) {
            le.clear();
            write_float(&mut le, *bound as f64 / divisor);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, *n);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count);
        if divisor == 1.0 {
            self.sample(&format!("{name}_sum"), labels, h.sum);
        } else {
            self.sample(&format!("{name}_sum"), labels, h.sum as f64 / divisor);
        }
        self.sample(&format!("{name}_count"), labels, h.count);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (no colons in labels by convention).
fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "a \\ b\nc");
        e.sample("x_total", &[("a", "q\"\\\n"), ("b", "")], 3u64);
        e.single("g", Kind::Gauge, "g", 0.25);
        e.single("inf", Kind::Gauge, "i", f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\",b=\"\"} 3\n\
             # HELP g g\n# TYPE g gauge\ng 0.25\n# HELP inf i\n# TYPE inf gauge\ninf +Inf\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_at_the_count() {
        static BOUNDS: [u64; 2] = [500_000, 2_000_000_000];
        let h = HistogramSnapshot { bounds: &BOUNDS, cumulative: vec![1, 3], count: 4, sum: 3_500_000_000 };
        let mut e = Exposition::default();
        e.family("d_seconds", Kind::Histogram, "d");
        e.histogram("d_seconds", &[("k", "v")], &h, 1e9);
        let text = e.finish();
        assert!(text.contains("d_seconds_bucket{k=\"v\",le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("d_seconds_bucket{k=\"v\",le=\"2\"} 3\n"), "{text}");
        assert!(text.contains("d_seconds_bucket{k=\"v\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("d_seconds_sum{k=\"v\"} 3.5\n"), "{text}");
        assert!(text.ends_with("d_seconds_count{k=\"v\"} 4\n"), "{text}");
    }
}
