//! The cluster key: every `/_raft/*` request carries
//! `Authorization: JobqCluster <hex HMAC-SHA256>` of its method, path and body
//! under the shared key (`--cluster-key-file`). API keys are Basic credentials
//! and never verify here; this scheme never authenticates an API request.

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

    fn mac(&self, method: &str, path: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(method.as_bytes());
        m.update(b"\n");
        m.update(path.as_bytes());
        m.update(b"\n");
        m.update(body);
        m
    }

    /// The Authorization header value for a request.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> String {
        let tag = self.mac(method, path, body).finalize().into_bytes();
        let mut out = String::with_capacity(SCHEME.len() + 1 + 64);
        out.push_str(SCHEME);
        out.push(' ');
        for b in tag {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Whether `header` is a valid signature of the request (constant time in the tag).
    pub fn verify(&self, header: Option<&[u8]>, method: &str, path: &str, body: &[u8]) -> bool {
        let Some(tag) = header.and_then(tag_of) else { return false };
        self.mac(method, path, body).verify_slice(&tag).is_ok()
    }
}

/// Whether a header is of the cluster scheme at all (checked before the body is read).
pub fn is_cluster_scheme(header: Option<&[u8]>) -> bool {
    header.and_then(tag_of).is_some()
}

fn tag_of(header: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, hex) = text.split_once(' ')?;
    if scheme != SCHEME || hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
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
        for bad in [&b""[..], b"JobqCluster", b"JobqCluster zz", b"Basic a2V5Og==", &h.as_bytes()[..70]] {
            assert!(!k.verify(Some(bad), "POST", "/_raft/vote", b"{}"));
        }
        assert!(!k.verify(None, "POST", "/_raft/vote", b"{}"));
        assert!(ClusterKey::from_file_text("short").is_err());
        assert!(ClusterKey::from_file_text("a-long-enough-key\nsecond-line-here").is_err());
    }
}
