//! The cluster key: every `/_raft/*` request carries
//! `Authorization: JobqCluster <head tag> <body tag>` under the shared key
//! (`--cluster-key-file`), each tag a hex HMAC-SHA256:
//! - body tag: of `METHOD\npath\n` + body;
//! - head tag: of `head\nMETHOD\npath\n<Content-Length>\n<body tag hex>`.
//!
//! The head tag is checked before any of the body is read, so a client without
//! the key never gets a large body buffered; the body tag once it is read.
//! API keys are Basic credentials and never verify here; this scheme never
//! authenticates an API request.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The Authorization scheme of cluster requests.
pub const SCHEME: &str = "JobqCluster";

/// The shared cluster key.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Shortest key accepted (bytes).
pub const MIN_KEY: usize = 16;

impl ClusterKey {
    /// The key file's one non-blank line.
    pub fn from_file_text(text: &str) -> Result<ClusterKey, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        match (lines.next(), lines.next()) {
            (Some(k), None) if k.len() >= MIN_KEY => Ok(ClusterKey(k.as_bytes().to_vec())),
            (Some(_), None) => Err(format!("the cluster key must be at least {MIN_KEY} bytes")),
            _ => Err("expected the cluster key on one line".into()),
        }
    }

    fn body_mac(&self, method: &str, path: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(method.as_bytes());
        m.update(b"\n");
        m.update(path.as_bytes());
        m.update(b"\n");
        m.update(body);
        m
    }

    fn head_mac(&self, method: &str, path: &str, length: u64, body_tag: &[u8; 32]) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(format!("head\n{method}\n{path}\n{length}\n{}", hex(body_tag)).as_bytes());
        m
    }

    /// The Authorization header value for a request (sent with `Content-Length: body.len()`).
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> String {
        let body_tag: [u8; 32] = self.body_mac(method, path, body).finalize().into_bytes().into();
        let head_tag: [u8; 32] =
            self.head_mac(method, path, body.len() as u64, &body_tag).finalize().into_bytes().into();
        format!("{SCHEME} {} {}", hex(&head_tag), hex(&body_tag))
    }

    /// Checks the head tag of a request whose body is `length` bytes, before
    /// the body is read; on success, the body tag to check the body against.
    pub fn verify_head(&self, header: Option<&[u8]>, method: &str, path: &str, length: u64) -> Option<BodyTag> {
        let (head, body) = header.and_then(tags_of)?;
        self.head_mac(method, path, length, &body).verify_slice(&head).ok()?;
        Some(BodyTag(body))
    }

    /// Whether the body read matches the tag its verified head carried (constant time).
    pub fn verify_body(&self, tag: &BodyTag, method: &str, path: &str, body: &[u8]) -> bool {
        self.body_mac(method, path, body).verify_slice(&tag.0).is_ok()
    }

    /// Both checks at once.
    #[cfg(test)]
    pub fn verify(&self, header: Option<&[u8]>, method: &str, path: &str, body: &[u8]) -> bool {
        self.verify_head(header, method, path, body.len() as u64)
            .is_some_and(|tag| self.verify_body(&tag, method, path, body))
    }
}

/// The body tag of a head whose own tag verified.
pub struct BodyTag([u8; 32]);

/// Whether a header is of the cluster scheme at all.
pub fn is_cluster_scheme(header: Option<&[u8]>) -> bool {
    header.and_then(tags_of).is_some()
}

fn hex(tag: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let text: Vec<u8> = tag.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]).collect();
    String::from_utf8(text).expect("hex digits are ASCII")
}

fn tags_of(header: &[u8]) -> Option<([u8; 32], [u8; 32])> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let mut words = text.split(' ');
    let (scheme, head, body) = (words.next()?, words.next()?, words.next()?);
    if scheme != SCHEME || words.next().is_some() {
        return None;
    }
    Some((unhex(head)?, unhex(body)?))
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let k = ClusterKey::from_file_text("\n  0123456789abcdef-key \n").unwrap();
        let h = k.sign("POST", "/_raft/vote", b"{}");
        assert!(k.verify(Some(h.as_bytes()), "POST", "/_raft/vote", b"{}"));
        assert!(is_cluster_scheme(Some(h.as_bytes())));
        for (m, p, b) in
            [("GET", "/_raft/vote", &b"{}"[..]), ("POST", "/_raft/append", b"{}"), ("POST", "/_raft/vote", b"{ }")]
        {
            assert!(!k.verify(Some(h.as_bytes()), m, p, b));
        }
        let other = ClusterKey::from_file_text("another-key-of-16-bytes").unwrap();
        assert!(!other.verify(Some(h.as_bytes()), "POST", "/_raft/vote", b"{}"));
        for bad in [&b""[..], b"JobqCluster", b"JobqCluster zz", b"Basic a2V5Og==", &h.as_bytes()[..140]] {
            assert!(!k.verify(Some(bad), "POST", "/_raft/vote", b"{}"));
        }
        assert!(!k.verify(None, "POST", "/_raft/vote", b"{}"));
        // The head alone: length and body tag bound, checked without the body.
        assert!(k.verify_head(Some(h.as_bytes()), "POST", "/_raft/vote", 2).is_some());
        assert!(k.verify_head(Some(h.as_bytes()), "POST", "/_raft/vote", 3).is_none());
        assert!(other.verify_head(Some(h.as_bytes()), "POST", "/_raft/vote", 2).is_none());
        let tag = k.verify_head(Some(h.as_bytes()), "POST", "/_raft/vote", 2).unwrap();
        assert!(k.verify_body(&tag, "POST", "/_raft/vote", b"{}"));
        assert!(!k.verify_body(&tag, "POST", "/_raft/vote", b"[]"));
        // Another body tag under the same head tag fails the head.
        let (head, _) = h.rsplit_once(' ').unwrap();
        let forged = format!("{head} {}", "0".repeat(64));
        assert!(k.verify_head(Some(forged.as_bytes()), "POST", "/_raft/vote", 2).is_none());
        assert!(ClusterKey::from_file_text("short").is_err());
        assert!(ClusterKey::from_file_text("a-long-enough-key\nsecond-line-here").is_err());
    }
}
