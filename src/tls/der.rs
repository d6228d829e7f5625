//! The one fact we read from a certificate ourselves: its validity period.
//! rustls never checks the dates of the server's own certificate, and a
//! server must not start (or reload) with one its clients will refuse.

/// `notBefore` and `notAfter` of a DER-encoded X.509 certificate, in Unix
/// seconds; `None` when the encoding is not one we can walk.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (certificate, _) = sequence(cert)?;
    let (tbs, _) = sequence(certificate)?;
    let mut rest = tbs;
    // version: [0] EXPLICIT, absent in v1 certificates.
    if rest.first() == Some(&0xa0) {
        rest = skip(rest)?;
    }
    rest = skip(rest)?; // serialNumber
    rest = skip(rest)?; // signature AlgorithmIdentifier
    rest = skip(rest)?; // issuer
    let (validity, _) = sequence(rest)?;
    let (tag, not_before, rest) = tlv(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    Some((not_before, time(tag, not_after)?))
}

/// Splits one DER element off the front: (tag, contents, what follows).
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *data.first()?;
    let first = *data.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*data.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    (end <= data.len()).then(|| (tag, &data[header..end], &data[end..]))
}

fn sequence(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = tlv(data)?;
    (tag == 0x30).then_some((contents, rest))
}

fn skip(data: &[u8]) -> Option<&[u8]> {
    tlv(data).map(|(_, _, rest)| rest)
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let number = |s: &[u8]| {
        s.iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = number(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 15) => (number(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| number(&rest[i..i + 2]);
    let (month, day) = (field(0)? as u32, field(2)? as u32);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = crate::time::days_from_civil(year, month, day);
    Some(days * 86_400 + field(4)? * 3600 + field(6)? * 60 + field(8)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_validity_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2021, 3, 4);
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (from, to) = validity(cert.der()).unwrap();
        assert_eq!(from, crate::time::days_from_civil(2021, 3, 4) * 86_400);
        assert_eq!(to, crate::time::days_from_civil(2049, 12, 31) * 86_400);
        // GeneralizedTime past 2049.
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            validity(cert.der()).unwrap().1,
            crate::time::days_from_civil(2051, 1, 2) * 86_400
        );
    }

    #[test]
    fn garbage_is_no_validity_and_no_panic() {
        for bytes in [
            &b""[..],
            b"\x30",
            b"\x30\x85\xff\xff\xff\xff\xff",
            b"\x30\x03\x30\x01\x00",
            b"hello",
        ] {
            assert_eq!(validity(bytes), None);
        }
    }
}
