//! Who is calling: HTTP basic auth with an API key as user name (empty password),
//! or a job's own token (user name the job key, password the token the engine gave
//! the job when it started running).
//!
//! Keys are kept only as SHA-256 digests and compared digest to digest, every
//! configured key each time, so the time taken says nothing about which bytes
//! matched. `*_by` fields get the key's configured name, else `key-` and the first
//! 8 hex digits of its digest: stable, short, and useless for guessing the key.

use std::str::FromStr;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use jobq::api::route::parse_id;
use jobq::api::{Caller, Scope};
use jobq::{JobKey, Store};

/// One `--api-key` value: `[NAME=]KEY[:P1,P2,...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub name: Option<String>,
    pub key: String,
    /// `None`: every project.
    pub projects: Option<Vec<u32>>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

impl FromStr for KeySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<KeySpec, String> {
        let (name, rest) = match s.split_once('=') {
            Some((n, r)) if valid_name(n) => (Some(n.to_string()), r),
            Some((n, _)) => {
                return Err(format!("the name before '=' ({n:?}) must be 1 to 64 of A-Z a-z 0-9 . _ @ + -"))
            }
            None => (None, s),
        };
        let (key, projects) = match rest.split_once(':') {
            Some((k, ps)) => {
                let mut list = Vec::new();
                for p in ps.split(',') {
                    list.push(parse_id(p.trim(), "a project id").map_err(|e| e.to_string())?);
                }
                (k, Some(list))
            }
            None => (rest, None),
        };
        if key.is_empty() {
            return Err("the API key is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic() && b != b'=' && b != b':') {
            return Err("an API key is printable ASCII without spaces, '=' or ':'".into());
        }
        Ok(KeySpec { name, key: key.to_string(), projects })
    }
}

/// Parse a keys file: one `[NAME=]KEY[:P1,...]` a line; blank lines and `#` comments skipped.
pub fn parse_key_file(text: &str) -> Result<Vec<KeySpec>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(line.parse().map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

pub struct Entry {
    digest: [u8; 32],
    actor: String,
    scope: Scope,
}

/// How requests are authenticated.
pub enum Auth {
    Keys(Vec<Entry>),
    /// `--insecure-no-auth`: everyone may do everything, and `*_by` records nothing.
    Open,
}

/// Why a request was not authenticated (401).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Malformed(&'static str),
    Unknown,
}

impl Refused {
    pub fn message(&self) -> String {
        match self {
            Refused::Missing => "authentication required: HTTP basic auth with the API key as user name".into(),
            Refused::Malformed(why) => format!("malformed Authorization header: {why}"),
            Refused::Unknown => "unknown API key or job token".into(),
        }
    }
}

pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equal digests, compared in constant time.
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The non-secret name of an unnamed key.
pub fn fingerprint(key: &str) -> String {
    let d = digest(key.as_bytes());
    format!("key-{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

impl Auth {
    pub fn from_specs(specs: Vec<KeySpec>) -> Result<Auth, String> {
        let mut entries: Vec<Entry> = Vec::with_capacity(specs.len());
        for s in specs {
            let d = digest(s.key.as_bytes());
            if entries.iter().any(|e| same(&e.digest, &d)) {
                return Err(format!(
                    "the API key named {} is given twice",
                    s.name.unwrap_or_else(|| fingerprint(&s.key))
                ));
            }
            let actor = s.name.unwrap_or_else(|| fingerprint(&s.key));
            let scope = s.projects.map_or(Scope::All, Scope::Projects);
            entries.push(Entry { digest: d, actor, scope });
        }
        Ok(Auth::Keys(entries))
    }

    /// What to log at start (names and scopes, never keys).
    pub fn describe(&self) -> String {
        match self {
            Auth::Open => "none (--insecure-no-auth)".into(),
            Auth::Keys(entries) => entries
                .iter()
                .map(|e| match &e.scope {
                    Scope::Projects(ps) => {
                        format!("{}:{}", e.actor, ps.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
                    }
                    _ => e.actor.clone(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// The caller behind an `Authorization` header value.
    pub fn authenticate(&self, store: &Store, header: Option<&[u8]>) -> Result<Caller, Refused> {
        let entries = match self {
            Auth::Open => return Ok(Caller::unrestricted()),
            Auth::Keys(e) => e,
        };
        let (user, password) = basic_credentials(header.ok_or(Refused::Missing)?)?;
        let d = digest(user.as_bytes());
        let mut found: Option<&Entry> = None;
        for e in entries {
            if same(&e.digest, &d) {
                found = Some(e);
            }
        }
        if let Some(e) = found {
            return Ok(Caller { actor: Some(e.actor.clone()), scope: e.scope.clone() });
        }
        match user.parse::<JobKey>() {
            Ok(key) if job_token_matches(store, key, &password) => {
                Ok(Caller { actor: Some(format!("job {key}")), scope: Scope::Job(key) })
            }
            _ => Err(Refused::Unknown),
        }
    }
}

/// Compared with the password when the key names no running job, so that an
/// existing job's key and any other take the same work.
const NO_TOKEN: &str = "no running job has this key: this string is never a token";

/// A token is good while its job runs. The store keeps running jobs' tokens in
/// memory: no record is read, whatever the job's size, and both sides are
/// compared digest to digest whether or not the job exists.
fn job_token_matches(store: &Store, key: JobKey, password: &str) -> bool {
    let token = store.running_job_token(key);
    let expected = digest(token.as_deref().unwrap_or(NO_TOKEN).as_bytes());
    let equal = same(&expected, &digest(password.as_bytes()));
    equal & token.is_some() & !password.is_empty()
}

/// The user name and password of a Basic `Authorization` header value.
pub fn basic_credentials(header: &[u8]) -> Result<(String, String), Refused> {
    let text = std::str::from_utf8(header).map_err(|_| Refused::Malformed("not ASCII"))?.trim();
    let (scheme, encoded) = text.split_once(' ').ok_or(Refused::Malformed("expected 'Basic <credentials>'"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Refused::Malformed("only the Basic scheme is supported"));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Refused::Malformed("credentials are not base64"))?;
    let pair = String::from_utf8(raw).map_err(|_| Refused::Malformed("credentials are not UTF-8"))?;
    let (user, password) = pair.split_once(':').unwrap_or((&pair, ""));
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs() {
        let s: KeySpec = "alice=abc123:53,54".parse().unwrap();
        assert_eq!(s, KeySpec { name: Some("alice".into()), key: "abc123".into(), projects: Some(vec![53, 54]) });
        let s: KeySpec = "abc123".parse().unwrap();
        assert_eq!((s.name, s.projects), (None, None));
        for bad in ["", "a=", "abc:", "abc:x", "abc:0", "k=ab=c", "bad name=abc", "ab c"] {
            assert!(bad.parse::<KeySpec>().is_err(), "{bad}");
        }
        assert_eq!(fingerprint("abc123").len(), 12);
    }

    #[test]
    fn basic_header() {
        let h = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("KEY:"));
        assert_eq!(basic_credentials(h.as_bytes()).unwrap(), ("KEY".into(), "".into()));
        assert!(basic_credentials(b"Bearer x").is_err());
        assert!(basic_credentials(b"Basic !!!").is_err());
    }
}
