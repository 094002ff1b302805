//! Tests of the record codec (wide, compact and packed records, the spec examples).

use super::*;

#[test]
fn a_huge_count_is_refused_without_reserving_it() {
    // A frame header may claim 2^30 records (found by the `frame` fuzz target).
    assert!(decode_jobs(&[], 1 << 30).is_err());
    assert!(decode_jobs(&[0; 64], u32::MAX).is_err());
}

fn sample() -> Job {
    Job {
        key: JobKey::new(53, 7, 81),
        state: JobState::Finished,
        priority: -3,
        times: [Some(10), None, Some(30), None],
        order_seq: 99,
        tags: vec!["a".into(), "ünï".into()],
        unique: Some("u1".into()),
        meta: MetaDoc::parse(r#"{"x":[1,2],"y":"z"}"#).unwrap(),
    }
}

#[test]
fn job_round_trip() {
    let job = sample();
    let mut buf = Vec::new();
    let prevs = [Prev::Unrecorded, Prev::Created, Prev::State(JobState::Pending), Prev::State(JobState::Purged)];
    for p in prevs {
        encode_job(&job, p, &mut buf);
    }
    let all = decode_jobs(&buf, 4).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(buf[PREV_AT], 0);
    assert_eq!(all[1].1.to_job(), job);
    assert_eq!(all[0].1.ts(), 30);
    assert_eq!(all.iter().map(|(_, v)| v.prev).collect::<Vec<_>>(), prevs);
    // A previous state beyond the known codes is damage.
    let mut bad = Vec::new();
    encode_job(&job, Prev::Created, &mut bad);
    bad[PREV_AT] = 7;
    seal(&mut bad, 0);
    assert!(decode_job(&bad).is_err());
}

#[test]
fn wide_records_still_decode_and_compact_ones_are_smaller() {
    let job = sample();
    let (mut wide, mut compact) = (Vec::new(), Vec::new());
    encode_job_wide(&job, Prev::State(JobState::Running), &mut wide);
    encode_job(&job, Prev::State(JobState::Running), &mut compact);
    assert!(!split_word(u32::from_le_bytes(wide[..4].try_into().unwrap())).1);
    assert_eq!(wide[WIDE_PREV_AT], Prev::State(JobState::Running).code());
    assert_eq!(compact[PREV_AT], Prev::State(JobState::Running).code());
    let (w, wn) = decode_job(&wide).unwrap();
    let (c, cn) = decode_job(&compact).unwrap();
    assert_eq!((&w, wn), (&c, wide.len()));
    assert_eq!(cn, compact.len());
    // 64 fixed bytes and a u32 document length become 12 fixed bytes and varints.
    assert!(compact.len() + 40 <= wide.len(), "{} vs {}", compact.len(), wide.len());
    // `jobq compact` writes the decoded wide record again, compact, every field kept.
    let mut again = Vec::new();
    encode_view(&w, &mut again);
    assert_eq!(again, compact);
    // Times out of order, far apart and at the extremes round-trip.
    let mut odd = job.clone();
    odd.state = JobState::Deleted;
    odd.times = [Some(u64::MAX), Some(0), Some(5), Some(1 << 63)];
    odd.priority = i64::MIN;
    let mut buf = Vec::new();
    encode_job(&odd, Prev::Created, &mut buf);
    assert_eq!(decode_job(&buf).unwrap().0.to_job(), odd);
}

#[test]
fn truncations_and_garbage_never_panic() {
    let (mut compact, mut wide) = (Vec::new(), Vec::new());
    encode_job(&sample(), Prev::Created, &mut compact);
    encode_job_wide(&sample(), Prev::Created, &mut wide);
    for buf in [compact, wide] {
        for cut in 0..buf.len() {
            assert!(decode_job(&buf[..cut]).is_err());
        }
        for i in 0..buf.len() {
            for x in [0x55, 0x80, 0xff] {
                let mut bad = buf.clone();
                bad[i] = bad[i].wrapping_add(x);
                let _ = decode_job(&bad);
                // Resealed, the body decoder itself sees the damage.
                if i >= RECORD_PREFIX {
                    seal(&mut bad, 0);
                    let _ = decode_job(&bad);
                }
            }
        }
    }
}

/// format-spec/log.md, "Compact record": the worked example's bytes.
#[test]
fn the_spec_example_compact_record() {
    let job = Job {
        key: JobKey::new(53, 7, 81),
        state: JobState::Pending,
        priority: 2,
        times: [Some(1397762393489), None, None, None],
        order_seq: 2,
        tags: vec!["a".into()],
        unique: None,
        meta: MetaDoc::parse(r#"{"units":1}"#).unwrap(),
    };
    let mut buf = Vec::new();
    encode_job(&job, Prev::Created, &mut buf);
    let want =
        ["24000080 ef5b98a5 00010001 0200000000000000", "350751 04 918b8689d728 01 0161", "7b22756e697473223a317d"];
    assert_eq!(hex(&buf), want.concat().replace(' ', ""));
}

/// format-spec/log.md, "Packed document": the worked example's bytes (a
/// raw-content dictionary, so that the example is short).
#[test]
fn the_spec_example_packed_record() {
    use crate::codec::docz::{decode_dict, encode_dict, Dict, Dicts, Packer};
    let dict = Dict::new(1, SPEC_DICT.as_bytes()).unwrap();
    let mut payload = Vec::new();
    encode_dict(&dict, &mut payload);
    assert_eq!(decode_dict(&payload).unwrap().raw(), SPEC_DICT.as_bytes());
    let job = Job {
        key: JobKey::new(53, 7, 81),
        state: JobState::Finished,
        priority: 2,
        times: [Some(1397762393489), None, Some(1397762400000), None],
        order_seq: 9,
        tags: vec![],
        unique: None,
        meta: MetaDoc::parse(SPEC_DOC).unwrap(),
    };
    let mut p = Packer::new(std::sync::Arc::new(dict)).unwrap();
    let mut buf = Vec::new();
    encode_job_packed(&job, Prev::State(JobState::Running), &mut buf, Some(&mut p), None);
    let (mut v, n) = decode_job(&buf).unwrap();
    assert_eq!(n, buf.len());
    assert!(v.is_packed());
    let dicts = Dicts::default();
    assert!(v.clone().unpack(&dicts).is_err(), "no dictionary 1 yet");
    dicts.add(std::sync::Arc::new(Dict::new(1, SPEC_DICT.as_bytes()).unwrap()));
    v.unpack(&dicts).unwrap();
    assert_eq!(v.to_job(), job);
    assert_eq!(hex(&buf), SPEC_PACKED.replace(' ', ""));
    // Re-encoding keeps the packed bytes; a wide record cannot be packed.
    let (v2, _) = decode_job(&buf).unwrap();
    let mut again = Vec::new();
    encode_view(&v2, &mut again);
    assert_eq!(again, buf);
    // Damage inside the frame under a good checksum: a typed error naming an
    // offset in the record, never a panic.
    let z = buf.len() - 17;
    for i in z..buf.len() {
        let mut bad = buf.clone();
        bad[i] ^= 0x5a;
        seal(&mut bad, 0);
        let (mut v, _) = decode_job(&bad).unwrap();
        if let Err(e) = v.unpack(&dicts) {
            assert!(e.offset >= z, "{e:?}");
        }
    }
    // A declared length over the limit (a bomb) is refused when the record decodes.
    let mut bomb = buf[..z - 1].to_vec();
    crate::codec::compact::put_varint(&mut bomb, crate::codec::docz::MAX_TEXT as u64 + 1);
    bomb.extend_from_slice(&buf[z..]);
    let body = (bomb.len() - RECORD_PREFIX) as u32 | crate::codec::compact::COMPACT_BIT;
    bomb[..4].copy_from_slice(&body.to_le_bytes());
    seal(&mut bomb, 0);
    assert!(decode_job(&bomb).unwrap_err().what.contains("over the limit"));
    // The packed flag in a wide record is damage.
    let mut wide = Vec::new();
    encode_job_wide(&job, Prev::Created, &mut wide);
    wide[RECORD_PREFIX + 14] |= FLAG_PACKED;
    seal(&mut wide, 0);
    assert!(decode_job(&wide).is_err());
}

const SPEC_DICT: &str =
    r#"{"units":1,"version":"1.4.27-py3","scheduled_by":"user@example.org","close_reason":"finished"}"#;
const SPEC_DOC: &str = r#"{"units":2,"version":"1.4.27-py3","close_reason":"finished"}"#;
const SPEC_PACKED: &str = "2c000080 93ae66e5 02050203 0900000000000000 350751 04 918b8689d728 de65 00 01 3c 0000 650000 083203005f2d00ebc2220401";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn catalog_round_trip() {
    let e = vec![SpiderEntry { project: 1, spider: 2, next_job: 3, name: "s".into() }];
    let mut buf = Vec::new();
    encode_catalog(&e, &mut buf);
    assert_eq!(decode_catalog(&buf).unwrap(), e);
    assert!(decode_catalog(&buf[..buf.len() - 1]).is_err());
}

/// A document packed before the writer lock is written as the writer's packer
/// writes it, and only when it was packed with that packer's dictionary (the
/// same `Dict`, not only the same id) and is the job's document.
#[test]
fn prepacked_documents_are_what_the_packer_writes() {
    use crate::codec::docz::{prepack, Dict, Packer};
    use std::sync::Arc;
    let dict = Arc::new(Dict::new(1, SPEC_DICT.as_bytes()).unwrap());
    let again = Arc::new(Dict::new(1, SPEC_DICT.as_bytes()).unwrap());
    let mut p = Packer::new(dict.clone()).unwrap();
    let job = |doc: &str| Job {
        key: JobKey::new(53, 7, 81),
        state: JobState::Pending,
        priority: 0,
        times: [Some(1), None, None, None],
        order_seq: 9,
        tags: vec!["a".into()],
        unique: None,
        meta: MetaDoc::parse(doc).unwrap(),
    };
    fn encode(j: &Job, p: Option<&mut Packer>, pre: Option<&crate::codec::docz::Prepacked>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_job_packed(j, Prev::Created, &mut out, p, pre);
        out
    }
    for doc in [SPEC_DOC, "{}", r#"{"a":"a different document, and longer than the other"}"#] {
        let j = job(doc);
        let own = encode(&j, Some(&mut p), None);
        assert_eq!(decode_job(&own).unwrap().0.is_packed(), doc == SPEC_DOC, "{doc}");
        let pre = prepack(&dict, doc.as_bytes()).unwrap();
        assert_eq!(encode(&j, Some(&mut p), Some(&pre)), own, "{doc}");
        // Another dictionary object, or no packer: the packer decides.
        let other = prepack(&again, doc.as_bytes()).unwrap();
        assert_eq!(encode(&j, Some(&mut p), Some(&other)), own, "{doc}");
        assert_eq!(encode(&j, None, Some(&pre)), encode(&j, None, None), "{doc}");
    }
    // A document packed for another job (another length) is not used.
    let pre = prepack(&dict, SPEC_DICT.as_bytes()).unwrap();
    let j = job(SPEC_DOC);
    assert_eq!(encode(&j, Some(&mut p), Some(&pre)), encode(&j, Some(&mut p), None));
}

/// A document stored with line breaks between its tokens (before writes dropped
/// them) is read as one line, packed or not: every answer is JSON lines.
#[test]
fn stored_line_breaks_never_reach_a_reader() {
    let text = "{\"cfg\":{\n  \"depth\": 2\r\n},\"s\":\"a\\nb\"}";
    let job = Job { meta: MetaDoc::from_trusted(text.into()), ..sample() };
    let mut buf = Vec::new();
    encode_job(&job, Prev::Created, &mut buf);
    let (_, v) = decode_jobs(&buf, 1).unwrap().pop().unwrap();
    assert_eq!(v.doc(), "{\"cfg\":{  \"depth\": 2},\"s\":\"a\\nb\"}");
    let dicts = Dicts::default();
    let dict = crate::codec::docz::tests::sample_dict(1);
    dicts.add(dict.clone());
    let mut p = Packer::new(dict).unwrap();
    let long =
        Job { meta: MetaDoc::from_trusted(format!("{{\"pad\":\"{}\",\n\"x\":\r1}}", "y".repeat(200))), ..sample() };
    let mut buf = Vec::new();
    encode_job_packed(&long, Prev::Created, &mut buf, Some(&mut p), None);
    let (_, mut v) = decode_jobs(&buf, 1).unwrap().pop().unwrap();
    assert!(v.is_packed());
    v.unpack(&dicts).unwrap();
    assert_eq!(v.doc(), format!("{{\"pad\":\"{}\",\"x\":1}}", "y".repeat(200)));
}
