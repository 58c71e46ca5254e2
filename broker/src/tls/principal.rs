//! The principal a client certificate names: its subject's common name
//! (CN), else its first DNS name (subject alternative name).
//!
//! A small DER reader over just the fields needed, instead of an X.509
//! crate: the certificates read here were verified by rustls already, and
//! anything unexpected gives no principal (never a wrong one).

use rustls_pki_types::CertificateDer;

/// DER tags used below.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
/// `[0] EXPLICIT` version and `[3] EXPLICIT` extensions of a TBSCertificate.
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
/// `dNSName [2] IA5String` of a GeneralName.
const DNS_NAME: u8 = 0x82;

/// id-at-commonName, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The principal of `cert`: subject CN, else the first DNS name; `None`
/// when it has neither (or does not parse).
pub fn of(cert: &CertificateDer<'_>) -> Option<String> {
    let tbs = tbs_certificate(cert.as_ref())?;
    common_name(tbs.subject)
        .or_else(|| tbs.extensions.and_then(first_dns_name))
        .filter(|p| !p.is_empty())
}

/// One TLV: (tag, contents, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// The next TLV of `input`, which must have tag `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// The parts of a TBSCertificate read here.
struct Tbs<'a> {
    subject: &'a [u8],
    extensions: Option<&'a [u8]>,
}

fn tbs_certificate(der: &[u8]) -> Option<Tbs<'_>> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (subject, mut rest) = expect(rest, SEQUENCE)?;
    // subjectPublicKeyInfo, then optional unique ids and extensions.
    rest = tlv(rest)?.2;
    let mut extensions = None;
    while !rest.is_empty() {
        let (tag, contents, next) = tlv(rest)?;
        if tag == EXTENSIONS {
            extensions = Some(expect(contents, SEQUENCE)?.0);
        }
        rest = next;
    }
    Some(Tbs {
        subject,
        extensions,
    })
}

/// The first CN of a Name's RDN sequence.
fn common_name(mut rdns: &[u8]) -> Option<String> {
    while !rdns.is_empty() {
        let (mut set, next) = expect(rdns, SET)?;
        while !set.is_empty() {
            let (attribute, more) = expect(set, SEQUENCE)?;
            let (oid, value) = expect(attribute, OID)?;
            if oid == OID_COMMON_NAME {
                let (tag, contents, _) = tlv(value)?;
                return directory_string(tag, contents);
            }
            set = more;
        }
        rdns = next;
    }
    None
}

/// A DirectoryString's text.
fn directory_string(tag: u8, contents: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, TeletexString (read as
        // UTF-8, which ASCII is).
        0x0c | 0x13 | 0x16 | 0x14 => String::from_utf8(contents.to_vec()).ok(),
        // BMPString: UTF-16BE.
        0x1e => {
            let units: Vec<u16> = contents
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// The first dNSName of the subjectAltName extension.
fn first_dns_name(mut extensions: &[u8]) -> Option<String> {
    while !extensions.is_empty() {
        let (extension, next) = expect(extensions, SEQUENCE)?;
        let (oid, mut rest) = expect(extension, OID)?;
        if oid == OID_SUBJECT_ALT_NAME {
            if rest.first() == Some(&BOOLEAN) {
                rest = tlv(rest)?.2;
            }
            let (value, _) = expect(rest, OCTET_STRING)?;
            let (mut names, _) = expect(value, SEQUENCE)?;
            while !names.is_empty() {
                let (tag, contents, more) = tlv(names)?;
                if tag == DNS_NAME {
                    return String::from_utf8(contents.to_vec()).ok();
                }
                names = more;
            }
            return None;
        }
        extensions = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::TestCerts;
    use rustls_pki_types::pem::PemObject;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem")
    }

    #[test]
    fn the_cn_else_the_first_dns_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::generate(dir.path());
        let (cert, _) = certs.issue(Some("alice"), &["alice.example"]);
        assert_eq!(of(&der(&cert)).as_deref(), Some("alice"));
        let (cert, _) = certs.issue(None, &["127.0.0.1", "svc.example", "other.example"]);
        assert_eq!(of(&der(&cert)).as_deref(), Some("svc.example"));
        let (cert, _) = certs.issue(None, &["127.0.0.1"]);
        assert_eq!(of(&der(&cert)), None);
    }

    #[test]
    fn garbage_names_no_one() {
        assert_eq!(
            of(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01])),
            None
        );
        assert_eq!(of(&CertificateDer::from(Vec::new())), None);
        assert_eq!(
            of(&CertificateDer::from(vec![0x30, 0x84, 0xff, 0xff])),
            None
        );
    }
}
