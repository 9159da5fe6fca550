//! Minimal DNS wire format: one-question queries, and the lab responder's answers.

pub const QTYPE_A: u16 = 1;
pub const QTYPE_AAAA: u16 = 28;

/// A recursion-desired query for `qname` (dotted, no trailing dot needed).
pub fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + qname.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in qname
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        m.push(label.len().min(63) as u8);
        m.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// End offset of the (uncompressed) name starting at `at`.
fn skip_name(m: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *m.get(at)?;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + usize::from(len);
    }
    None
}

/// `(id, qtype, is_response, ancount)` of a one-question message.
pub fn parse(m: &[u8]) -> Option<(u16, u16, bool, u16)> {
    if m.len() < 12 || u16::from_be_bytes([m[4], m[5]]) != 1 {
        return None;
    }
    let end = skip_name(m, 12)?;
    let qtype = u16::from_be_bytes([*m.get(end)?, *m.get(end + 1)?]);
    m.get(end + 3)?;
    let id = u16::from_be_bytes([m[0], m[1]]);
    Some((
        id,
        qtype,
        m[2] & 0x80 != 0,
        u16::from_be_bytes([m[6], m[7]]),
    ))
}

/// The lab responder's answer to a query: A → 192.0.2.1, AAAA → 2001:db8::1, other
/// types → an empty NOERROR answer. None for anything that is not a query.
pub fn answer(q: &[u8]) -> Option<Vec<u8>> {
    let (_, qtype, is_response, _) = parse(q)?;
    if is_response {
        return None;
    }
    let qend = skip_name(q, 12)? + 4;
    let rdata: &[u8] = match qtype {
        QTYPE_A => &[192, 0, 2, 1],
        QTYPE_AAAA => &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        _ => &[],
    };
    let mut r = Vec::with_capacity(qend + 28);
    r.extend_from_slice(&q[..2]);
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(!rdata.is_empty()), 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..qend]);
    if !rdata.is_empty() {
        r.extend_from_slice(&[0xc0, 0x0c]);
        r.extend_from_slice(&qtype.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_layout() {
        let q = query(0xbeef, "example.test", QTYPE_AAAA);
        assert_eq!(&q[..2], &[0xbe, 0xef]);
        assert_eq!(&q[12..26], b"\x07example\x04test\x00");
        assert_eq!(parse(&q), Some((0xbeef, QTYPE_AAAA, false, 0)));
    }

    #[test]
    fn answers_a_and_aaaa() {
        let a = answer(&query(1, "x.test", QTYPE_A)).unwrap();
        assert_eq!(parse(&a), Some((1, QTYPE_A, true, 1)));
        assert_eq!(&a[a.len() - 4..], &[192, 0, 2, 1]);
        let aaaa = answer(&query(2, "x.test", QTYPE_AAAA)).unwrap();
        assert_eq!(parse(&aaaa), Some((2, QTYPE_AAAA, true, 1)));
        assert_eq!(aaaa[aaaa.len() - 1], 1);
        assert!(answer(&a).is_none(), "responses are not answered");
        assert!(answer(&[0u8; 5]).is_none());
    }
}
