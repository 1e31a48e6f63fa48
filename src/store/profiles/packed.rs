//! Packed JSON: the binary form in which the store keeps event bodies.
//!
//! A JSON value becomes a tag byte followed by its payload: integers as zigzag or plain LEB128
//! varints, doubles as 8 little-endian bytes, strings as a varint length and UTF-8 bytes, arrays
//! and objects as the byte length of their contents (4 bytes, little-endian), their item count
//! (a varint) and their items (objects: each key as a string without a tag, then its value).
//!
//! Why not JSON text: segmentation reads a few fields of every event of every profile. Text has
//! to be lexed character by character, even to skip a field; packed values are read without
//! parsing numbers or unescaping strings, and a container that no query reads is skipped in one
//! step by its byte length. Packing is also cheaper than printing JSON at ingest (no escaping).
//! The size is about that of compact JSON text: what quotes, colons and commas no longer take,
//! container lengths and 8-byte doubles take back.
//!
//! [`PackedDeserializer`] is a serde deserializer over packed bytes, so the same visitors that
//! read JSON text (`serde_json::Value`, the sample's column flattening, `IgnoredAny`) read packed
//! values, borrowing strings from the stored bytes. Packing then deserializing gives back the
//! identical `serde_json::Value`, numbers included (`u64`, negative `i64` and `f64` are kept
//! apart as serde_json keeps them).

use serde::de::{self, DeserializeSeed, Visitor};
use serde_json::Value;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
/// A negative integer, zigzag varint.
const NEGATIVE: u8 = 3;
/// A non-negative integer, varint.
const POSITIVE: u8 = 4;
const DOUBLE: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// Appends the packed form of `value` to `out`.
pub fn pack(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(number) => {
            if let Some(positive) = number.as_u64() {
                out.push(POSITIVE);
                varint(positive, out);
            } else if let Some(negative) = number.as_i64() {
                out.push(NEGATIVE);
                varint(((negative << 1) ^ (negative >> 63)) as u64, out);
            } else {
                out.push(DOUBLE);
                let double = number.as_f64().unwrap_or(f64::NAN);
                out.extend_from_slice(&double.to_le_bytes());
            }
        }
        Value::String(text) => {
            out.push(STRING);
            string(text, out);
        }
        Value::Array(items) => container(ARRAY, items.len(), out, |out| {
            for item in items {
                pack(item, out);
            }
        }),
        Value::Object(fields) => container(OBJECT, fields.len(), out, |out| {
            for (key, item) in fields {
                string(key, out);
                pack(item, out);
            }
        }),
    }
}

/// Returns the packed form of `value`.
pub fn to_packed(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    pack(value, &mut out);
    out
}

/// Reads a packed value back as a `serde_json::Value`.
pub fn to_value(bytes: &[u8]) -> Result<Value, PackedError> {
    let mut deserializer = PackedDeserializer::new(bytes);
    let value = serde::Deserialize::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn string(text: &str, out: &mut Vec<u8>) {
    varint(text.len() as u64, out);
    out.extend_from_slice(text.as_bytes());
}

fn container(tag: u8, count: usize, out: &mut Vec<u8>, items: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let start = out.len();
    varint(count as u64, out);
    items(out);
    // Containers over 4 GiB cannot occur: a stored row is far below that.
    let length = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[length_at..start].copy_from_slice(&length.to_le_bytes());
}

/// Why packed bytes could not be read: they are truncated or corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packed value: {0}")]
pub struct PackedError(String);

impl de::Error for PackedError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        PackedError(message.to_string())
    }
}

/// A serde deserializer reading one packed value (see the module documentation).
pub struct PackedDeserializer<'de> {
    bytes: &'de [u8],
}

impl<'de> PackedDeserializer<'de> {
    /// Reads the value at the start of `bytes`.
    pub fn new(bytes: &'de [u8]) -> Self {
        Self { bytes }
    }

    /// Fails unless every byte was read.
    pub fn end(&self) -> Result<(), PackedError> {
        match self.bytes.is_empty() {
            true => Ok(()),
            false => Err(PackedError("trailing bytes".into())),
        }
    }

    fn take(&mut self, length: usize) -> Result<&'de [u8], PackedError> {
        if self.bytes.len() < length {
            return Err(PackedError("truncated".into()));
        }
        let (head, tail) = self.bytes.split_at(length);
        self.bytes = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, PackedError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, PackedError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PackedError("varint too long".into()))
    }

    fn length(&mut self) -> Result<usize, PackedError> {
        usize::try_from(self.varint()?).map_err(|_| PackedError("length too large".into()))
    }

    fn str(&mut self) -> Result<&'de str, PackedError> {
        let length = self.length()?;
        std::str::from_utf8(self.take(length)?).map_err(|_| PackedError("invalid utf-8".into()))
    }

    /// Reads a container's byte length and item count; returns the count.
    fn container(&mut self) -> Result<usize, PackedError> {
        let length = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        if self.bytes.len() < length {
            return Err(PackedError("truncated container".into()));
        }
        self.length()
    }

    /// Skips one value; containers in one step by their byte length.
    fn skip(&mut self) -> Result<(), PackedError> {
        match self.byte()? {
            NULL | FALSE | TRUE => {}
            NEGATIVE | POSITIVE => {
                self.varint()?;
            }
            DOUBLE => {
                self.take(8)?;
            }
            STRING => {
                let length = self.length()?;
                self.take(length)?;
            }
            ARRAY | OBJECT => {
                let length = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                self.take(length as usize)?;
            }
            tag => return Err(PackedError(format!("unknown tag {tag}"))),
        }
        Ok(())
    }
}

impl<'de> de::Deserializer<'de> for &mut PackedDeserializer<'de> {
    type Error = PackedError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PackedError> {
        match self.byte()? {
            NULL => visitor.visit_unit(),
            FALSE => visitor.visit_bool(false),
            TRUE => visitor.visit_bool(true),
            NEGATIVE => {
                let zigzag = self.varint()?;
                visitor.visit_i64(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
            }
            POSITIVE => visitor.visit_u64(self.varint()?),
            DOUBLE => {
                let bytes = self.take(8)?.try_into().expect("8 bytes");
                visitor.visit_f64(f64::from_le_bytes(bytes))
            }
            STRING => visitor.visit_borrowed_str(self.str()?),
            ARRAY => {
                let remaining = self.container()?;
                visitor.visit_seq(Items {
                    deserializer: self,
                    remaining,
                })
            }
            OBJECT => {
                let remaining = self.container()?;
                visitor.visit_map(Items {
                    deserializer: self,
                    remaining,
                })
            }
            tag => Err(PackedError(format!("unknown tag {tag}"))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PackedError> {
        match self.bytes.first() {
            Some(&NULL) => {
                self.byte()?;
                visitor.visit_none()
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PackedError> {
        self.skip()?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
    }
}

/// The items of an array, or the entries of an object, being read.
struct Items<'a, 'de> {
    deserializer: &'a mut PackedDeserializer<'de>,
    remaining: usize,
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = PackedError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, PackedError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        seed.deserialize(&mut *self.deserializer).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, 'de> {
    type Error = PackedError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PackedError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let key = self.deserializer.str()?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, PackedError> {
        seed.deserialize(&mut *self.deserializer)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".{0,8}", inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn packing_round_trips_every_json_value(value in arbitrary_json()) {
            let packed = to_packed(&value);
            prop_assert_eq!(to_value(&packed).unwrap(), value.clone());
            // Skipping reads exactly the value's bytes.
            let mut deserializer = PackedDeserializer::new(&packed);
            deserializer.skip().unwrap();
            prop_assert!(deserializer.end().is_ok());
            // Every strict prefix is reported as truncated, never read as something else.
            for cut in 0..packed.len() {
                prop_assert!(to_value(&packed[..cut]).is_err());
            }
        }
    }

    #[test]
    fn numbers_keep_their_serde_json_kind_and_order_is_kept() {
        let value = json!({"z": 1, "a": -1, "m": 1.0, "big": u64::MAX, "min": i64::MIN,
                           "nested": {"list": [null, true, "x"], "empty": {}}});
        let back = to_value(&to_packed(&value)).unwrap();
        assert_eq!(back.to_string(), value.to_string());
        assert!(back["m"].is_f64() && back["z"].is_u64() && back["a"].is_i64());
    }

    #[test]
    fn a_packed_event_is_about_the_size_of_its_compact_json() {
        let event = json!({
            "_id": "0b5f7c1e-8a57-4e0a-9a51-3b1f0f0d2f11", "timestamp": "2024-05-01T10:00:00.000Z",
            "eventType": "commerce.purchases",
            "commerce": {"purchases": {"value": 1.0}, "order": {"priceTotal": 129.99}},
            "productListItems": [{"SKU": "SKU-1042", "quantity": 2, "priceTotal": 64.99}],
            "identityMap": {"ECID": [{"id": "12345678901234567890123456789012345678", "primary": true}]}
        });
        let (packed, text) = (to_packed(&event).len(), event.to_string().len());
        assert!(
            packed * 10 <= text * 11,
            "packed {packed} bytes, text {text}"
        );
    }

    #[test]
    fn corrupt_bytes_are_errors() {
        assert!(to_value(&[42]).is_err());
        assert!(to_value(&[STRING, 2, 0xff, 0xfe]).is_err());
        assert!(to_value(&[NULL, NULL]).is_err());
    }
}
