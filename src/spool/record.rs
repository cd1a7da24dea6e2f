//! The on-disk record format: one event as a JSON line of routing metadata then the
//! CloudEvent bytes, and a group (one stored entry) as length-prefixed records.

use super::error::SpoolError;
use crate::broker::Outgoing;

/// A record: the routing metadata as one JSON line, then the event body. Fails loudly:
/// an event is never stored with its metadata missing.
pub fn encode(msg: &Outgoing) -> Result<Vec<u8>, SpoolError> {
    let mut out = serde_json::to_vec(msg)?;
    out.push(b'\n');
    out.extend_from_slice(&msg.body);
    Ok(out)
}

pub fn decode(rec: &[u8]) -> Option<Outgoing> {
    let nl = rec.iter().position(|b| *b == b'\n')?;
    let mut msg: Outgoing = serde_json::from_slice(&rec[..nl]).ok()?;
    msg.body = rec[nl + 1..].to_vec();
    Some(msg)
}

/// Events and bytes of a stored group's records.
pub fn measure(group: &[u8]) -> (u32, u64) {
    records(group).fold((0, 0), |(n, b), rec| (n + 1, b + rec.len() as u64))
}

/// A group's value: each record as its length (u32, little endian) and its bytes.
pub fn push_record(group: &mut Vec<u8>, rec: &[u8]) {
    group.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    group.extend_from_slice(rec);
}

/// The records of a group's value, in order; stops at anything malformed.
pub fn records(group: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = group;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            tracing::error!("truncated spool group: the rest of it is skipped");
            rest = &[];
            return None;
        }
        let (rec, tail) = tail.split_at(len);
        rest = tail;
        Some(rec)
    })
}

/// Records found by scanning raw bytes (a file the store cannot open): every place that
/// looks like a length-prefixed record whose metadata line decodes and whose body is
/// JSON. Returned with their offsets, in file order. The store copies pages on write, so
/// a raw scan also finds stale copies of events already confirmed: callers dedupe by id,
/// and consumers dedupe on `message_id` anyway.
pub fn scan_raw(bytes: &[u8]) -> Vec<(usize, Outgoing)> {
    const START: &[u8] = b"{\"id\":\"";
    let mut out = Vec::new();
    let mut at = 4;
    while at + START.len() <= bytes.len() {
        let Some(found) = memchr_slice(&bytes[at..], START) else {
            break;
        };
        let p = at + found;
        at = p + 1;
        if p < 4 {
            continue;
        }
        let len =
            u32::from_le_bytes([bytes[p - 4], bytes[p - 3], bytes[p - 2], bytes[p - 1]]) as usize;
        let Some(rec) = bytes.get(p..p.saturating_add(len)) else {
            continue;
        };
        let Some(msg) = decode(rec) else {
            continue;
        };
        if serde_json::from_slice::<serde::de::IgnoredAny>(&msg.body).is_err() {
            continue;
        }
        at = p + len;
        out.push((p, msg));
    }
    out
}

fn memchr_slice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u64) -> Outgoing {
        Outgoing {
            id: format!("id-{i}"),
            routing_key: "k.message.created".into(),
            vendor: "kommunicate".into(),
            source: "k".into(),
            event: "message.created".into(),
            timestamp: 1_700_000_000 + i,
            body: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    #[test]
    fn records_round_trip_and_a_raw_scan_finds_them_among_garbage() {
        let mut group = Vec::new();
        for i in 0..3 {
            push_record(&mut group, &encode(&msg(i)).unwrap());
        }
        let back: Vec<_> = records(&group).map(|r| decode(r).unwrap()).collect();
        assert_eq!(back, (0..3).map(msg).collect::<Vec<_>>());
        assert_eq!(measure(&group).0, 3);
        let mut file = vec![0xAB; 1000];
        file.extend_from_slice(&group);
        file.extend_from_slice(&[0x11; 77]);
        // A record cut short at the end of the file is not "found".
        let mut cut = Vec::new();
        push_record(&mut cut, &encode(&msg(9)).unwrap());
        file.extend_from_slice(&cut[..cut.len() - 3]);
        let found: Vec<_> = scan_raw(&file).into_iter().map(|(_, m)| m).collect();
        assert_eq!(found, (0..3).map(msg).collect::<Vec<_>>());
    }
}
