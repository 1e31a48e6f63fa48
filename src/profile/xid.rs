//! XIDs: opaque, URL-safe ids for an identity, used as `entityId` when no namespace is given.
//!
//! Adobe derives XIDs by hashing; segmentd encodes `namespace \0 id` in unpadded base64url instead, so
//! an XID decodes back to its identity without a lookup table and the same identity always has the
//! same XID. A merged profile's XID is the XID of its primary identity.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Returns the XID of an identity (namespace codes compare case-insensitively, so they are lowercased).
pub fn encode(namespace: &str, id: &str) -> String {
    let mut bytes = namespace.to_ascii_lowercase().into_bytes();
    bytes.push(0);
    bytes.extend_from_slice(id.as_bytes());
    base64url(&bytes)
}

/// Encodes bytes as unpadded base64url (RFC 4648 §5), for opaque ids.
pub fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let value = chunk.iter().enumerate().fold(0u32, |acc, (index, byte)| {
            acc | (u32::from(*byte) << (16 - 8 * index))
        });
        for position in 0..=chunk.len() {
            out.push(ALPHABET[((value >> (18 - 6 * position)) & 63) as usize] as char);
        }
    }
    out
}

/// Returns the (namespace, id) an XID encodes, or `None` when it is not one.
pub fn decode(xid: &str) -> Option<(String, String)> {
    let mut bytes = Vec::with_capacity(xid.len() * 3 / 4);
    for chunk in xid.as_bytes().chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut value = 0u32;
        for (index, symbol) in chunk.iter().enumerate() {
            let digit = ALPHABET.iter().position(|candidate| candidate == symbol)? as u32;
            value |= digit << (18 - 6 * index);
        }
        for index in 0..chunk.len() - 1 {
            bytes.push((value >> (16 - 8 * index)) as u8);
        }
    }
    let text = String::from_utf8(bytes).ok()?;
    let (namespace, id) = text.split_once('\0')?;
    (!namespace.is_empty() && !id.is_empty()).then(|| (namespace.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn namespaces_are_case_insensitive() {
        assert_eq!(encode("ECID", "123"), encode("ecid", "123"));
        assert_eq!(
            decode(&encode("Email", "a@b.c")),
            Some(("email".into(), "a@b.c".into()))
        );
    }

    #[test]
    fn garbage_is_not_an_xid() {
        for bad in ["", "a", "!!!!", "YWJj"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn xids_round_trip(namespace in "[a-z]{1,8}", id in "[^\u{0}]{1,40}") {
            let xid = encode(&namespace, &id);
            prop_assert!(xid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(decode(&xid), Some((namespace, id)));
        }
    }
}
