//! The stored vocabulary document, KATO's layout:
//! `{"class": "gpu_vocabulary", "symbol_to_id": {sym: id}, "id_to_symbol": {"<id>": sym}, "vocab_size": n,
//! "next_id": n}`.
//!
//! JSON is written ASCII-only (`\uXXXX` escapes), byte for byte as Python's
//! `json.dumps(doc, ensure_ascii=True, separators=(",", ":"))` writes it, so any reader, whatever its default
//! encoding, gets the same symbols.

use std::fmt;
use std::io;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Vocabulary;
use crate::error::{KatoError, Result};
use crate::store::MAX_SYMBOL_ID;

/// Value of the `class` field that identifies the vocabulary document.
pub(crate) const VOCABULARY_CLASS: &str = "gpu_vocabulary";

/// A vocabulary as stored: maps kept as lists of entries, in document order, so that loading a large document costs
/// no hashing before validation. Not validated until [`VocabularyDocument::into_vocabulary`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VocabularyDocument {
    pub symbol_to_id: Vec<(String, i64)>,
    /// Keys are decimal strings (`"0"`, `"17"`).
    pub id_to_symbol: Vec<(String, String)>,
    pub vocab_size: Option<i64>,
    pub next_id: i64,
}

/// Serializes KATO's layout from any source of entries, so that a [`VocabularyDocument`] and a live [`Vocabulary`]
/// (written without building a document first) produce the same bytes.
fn serialize_layout<S, K, I, J>(
    serializer: S,
    symbol_to_id: I,
    id_to_symbol: J,
    vocab_size: Option<i64>,
    next_id: i64,
) -> std::result::Result<S::Ok, S::Error>
where
    S: Serializer,
    K: Serialize,
    I: Iterator<Item = (K, i64)>,
    J: Iterator<Item = (K, K)>,
{
    struct Entries<T>(std::cell::Cell<Option<T>>);
    impl<K: Serialize, V: Serialize, T: Iterator<Item = (K, V)>> Serialize for Entries<T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
            let entries = self.0.take().expect("entries serialized once");
            let mut map = serializer.serialize_map(None)?;
            for (key, value) in entries {
                map.serialize_entry(&key, &value)?;
            }
            map.end()
        }
    }
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("class", VOCABULARY_CLASS)?;
    map.serialize_entry("symbol_to_id", &Entries(std::cell::Cell::new(Some(symbol_to_id))))?;
    map.serialize_entry("id_to_symbol", &Entries(std::cell::Cell::new(Some(id_to_symbol))))?;
    if let Some(size) = vocab_size {
        map.serialize_entry("vocab_size", &size)?;
    }
    map.serialize_entry("next_id", &next_id)?;
    map.end()
}

impl Serialize for VocabularyDocument {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_layout(
            serializer,
            self.symbol_to_id.iter().map(|(s, id)| (s.as_str(), *id)),
            self.id_to_symbol.iter().map(|(k, s)| (k.as_str(), s.as_str())),
            self.vocab_size,
            self.next_id,
        )
    }
}

/// A live vocabulary serialized as its document.
pub(crate) struct DocumentOf<'a>(pub &'a Vocabulary);

impl Serialize for DocumentOf<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let vocab = self.0;
        // Keys and values as owned strings only where a number must become a string key.
        serialize_layout(
            serializer,
            vocab.iter().map(|(id, s)| (KeyOrStr::Str(s), i64::from(id))),
            vocab.iter().map(|(id, s)| (KeyOrStr::Id(id), KeyOrStr::Str(s))),
            Some(vocab.len() as i64),
            i64::from(vocab.next_id()),
        )
    }
}

/// A map key or value that is a symbol, or an id written as a decimal string key.
enum KeyOrStr<'a> {
    Str(&'a str),
    Id(u32),
}

impl Serialize for KeyOrStr<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            KeyOrStr::Str(s) => serializer.serialize_str(s),
            // serde_json writes an integer map key as its decimal string.
            KeyOrStr::Id(id) => serializer.serialize_u32(*id),
        }
    }
}

/// Writes `value` as ASCII-only JSON (see the module doc).
pub(crate) fn to_ascii_json<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    let mut serializer = serde_json::Serializer::with_formatter(&mut *out, AsciiFormatter);
    // Writing into a Vec cannot fail, and every value serialized here has string keys.
    value.serialize(&mut serializer).expect("serializing to memory");
}

/// serde_json's compact formatter, except that every character outside `' '..='~'` is a `\uXXXX` escape (UTF-16
/// units, lower-case hex), as Python's `ensure_ascii` writes it. serde_json escapes `"`, `\` and control characters
/// itself before a fragment gets here.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut plain_from = 0;
        for (at, c) in fragment.char_indices() {
            if !(' '..='~').contains(&c) {
                writer.write_all(&bytes[plain_from..at])?;
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                plain_from = at + c.len_utf8();
            }
        }
        writer.write_all(&bytes[plain_from..])
    }
}

/// Reads the document; `class` must be `"gpu_vocabulary"` if present, and present when `require_class`. Fields
/// other than the layout's (such as a database's `_id`) are ignored.
struct DocumentVisitor {
    require_class: bool,
}

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = VocabularyDocument;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a vocabulary document (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<VocabularyDocument, A::Error> {
        let mut class: Option<String> = None;
        let mut symbol_to_id = None;
        let mut id_to_symbol = None;
        let mut vocab_size: Option<Option<i64>> = None;
        let mut next_id = None;
        fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> std::result::Result<(), E> {
            if slot.replace(value).is_some() {
                return Err(E::duplicate_field(name));
            }
            Ok(())
        }
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "class" => once(&mut class, "class", map.next_value()?)?,
                "symbol_to_id" => once(&mut symbol_to_id, "symbol_to_id", map.next_value::<Entries<i64>>()?.0)?,
                "id_to_symbol" => once(&mut id_to_symbol, "id_to_symbol", map.next_value::<Entries<String>>()?.0)?,
                "vocab_size" => once(&mut vocab_size, "vocab_size", map.next_value()?)?,
                "next_id" => once(&mut next_id, "next_id", map.next_value()?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match class.as_deref() {
            Some(VOCABULARY_CLASS) => {}
            None if !self.require_class => {}
            other => {
                return Err(de::Error::custom(format_args!(
                    "'class' is {}, expected {VOCABULARY_CLASS:?}",
                    other.map_or("missing".to_string(), |c| format!("{c:?}"))
                )))
            }
        }
        Ok(VocabularyDocument {
            symbol_to_id: symbol_to_id.ok_or_else(|| de::Error::missing_field("symbol_to_id"))?,
            id_to_symbol: id_to_symbol.ok_or_else(|| de::Error::missing_field("id_to_symbol"))?,
            vocab_size: vocab_size.flatten(),
            next_id: next_id.ok_or_else(|| de::Error::missing_field("next_id"))?,
        })
    }
}

/// A JSON object read as its entries, in order, duplicates kept (validation reports them).
struct Entries<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct EntriesVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries<V>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<String, V>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

/// Accepts a document with or without `class` (a database document may carry it or not); a `class` other than
/// `"gpu_vocabulary"` is refused.
impl<'de> Deserialize<'de> for VocabularyDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(DocumentVisitor { require_class: false })
    }
}

/// A document read from a file: `class` is required there, as it is all that tells a vocabulary file from another
/// JSON file.
pub(crate) struct StoredDocument(pub VocabularyDocument);

impl<'de> Deserialize<'de> for StoredDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(DocumentVisitor { require_class: true }).map(StoredDocument)
    }
}

/// `key` as an id if it is a decimal integer without sign or leading zeros (None otherwise, or when it overflows).
fn decimal_key(key: &str) -> Option<u64> {
    let digits = key.as_bytes();
    let well_formed = !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) && (digits[0] != b'0' || key == "0");
    if well_formed {
        key.parse().ok()
    } else {
        None
    }
}

impl VocabularyDocument {
    /// Validates the document and builds the vocabulary. Refused (`Err(KatoError::CorruptVocabulary)`, naming
    /// `source`): `next_id` outside `[0, MAX_SYMBOL_ID + 1]`; an `id_to_symbol` key that is not a decimal integer
    /// without sign or leading zeros, or not below `next_id`; an id twice in `id_to_symbol`; an id of `symbol_to_id`
    /// outside `[0, next_id)`; `id_to_symbol` not the exact inverse of `symbol_to_id` (a symbol twice included);
    /// `vocab_size`, when given, not the number of symbols. A vocabulary that does not round-trip would silently
    /// corrupt every later match, so nothing is repaired.
    pub fn into_vocabulary(self, source: &str) -> Result<Vocabulary> {
        let corrupt = |detail: String| KatoError::CorruptVocabulary(format!("{source}: {detail}"));
        let max_next = i64::from(MAX_SYMBOL_ID) + 1;
        if !(0..=max_next).contains(&self.next_id) {
            return Err(corrupt(format!("next_id={} outside [0, {max_next}]", self.next_id)));
        }
        let next_id = self.next_id as u32;

        let mut by_id: Vec<(u32, String)> = Vec::with_capacity(self.id_to_symbol.len());
        for (key, symbol) in self.id_to_symbol {
            let Some(id) = decimal_key(&key) else {
                return Err(corrupt(format!("id_to_symbol key {key:?} is not a non-negative integer")));
            };
            if id >= u64::from(next_id) {
                return Err(corrupt(format!("id_to_symbol key {key:?} outside [0, next_id={next_id})")));
            }
            by_id.push((id as u32, symbol));
        }
        // Documents are normally written in id order; sort only when not.
        if !by_id.is_sorted_by_key(|(id, _)| *id) {
            by_id.sort_unstable_by_key(|(id, _)| *id);
        }
        if let Some(pair) = by_id.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(corrupt(format!("id {} appears twice in id_to_symbol", pair[0].0)));
        }

        for (symbol, id) in &self.symbol_to_id {
            if !(0..i64::from(next_id)).contains(id) {
                return Err(corrupt(format!("id {id} of {symbol:?} outside [0, next_id={next_id})")));
            }
            let found = by_id.binary_search_by_key(&(*id as u32), |(i, _)| *i).ok().map(|at| by_id[at].1.as_str());
            if found != Some(symbol.as_str()) {
                return Err(corrupt(format!(
                    "id_to_symbol is not the inverse of symbol_to_id (symbol {symbol:?} -> {id} -> {found:?})"
                )));
            }
        }
        if self.symbol_to_id.len() != by_id.len() {
            return Err(corrupt(format!(
                "id_to_symbol has {} entries but symbol_to_id has {}",
                by_id.len(),
                self.symbol_to_id.len()
            )));
        }
        if let Some(size) = self.vocab_size {
            if size != by_id.len() as i64 {
                return Err(corrupt(format!("vocab_size={size} but {} symbols stored", by_id.len())));
            }
        }
        drop(self.symbol_to_id);

        let mut vocab = Vocabulary::new();
        vocab.text.reserve(by_id.iter().map(|(_, s)| s.len()).sum());
        vocab.ends.reserve(by_id.len());
        vocab.index.reserve(by_id.len());
        for (id, symbol) in &by_id {
            // Every symbol_to_id entry names a distinct id whose symbol is its own, and the counts are equal; only
            // a symbol listed twice (with two ids) gets here, and load_one refuses it.
            vocab.load_one(*id, symbol).map_err(corrupt)?;
        }
        vocab.next_id = next_id;
        Ok(vocab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> std::result::Result<VocabularyDocument, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn load(json: &str) -> Result<Vocabulary> {
        parse(json).expect("parses").into_vocabulary("test doc")
    }

    fn corrupt_text(json: &str) -> String {
        match load(json) {
            Err(KatoError::CorruptVocabulary(text)) => text,
            other => panic!("expected CorruptVocabulary for {json}, got {other:?}"),
        }
    }

    /// A well-formed document loads; each rule broken alone is refused with a message naming the problem.
    #[test]
    fn every_corruption_rule_is_enforced() {
        let good = r#"{"class":"gpu_vocabulary","symbol_to_id":{"a":0,"b":2},"id_to_symbol":{"0":"a","2":"b"},"vocab_size":2,"next_id":5}"#;
        let vocab = load(good).unwrap();
        assert_eq!(vocab.iter().collect::<Vec<_>>(), [(0, "a"), (2, "b")]);
        assert_eq!(vocab.next_id(), 5);

        let cases: &[(&str, &str)] = &[
            (r#"{"symbol_to_id":{},"id_to_symbol":{},"next_id":-1}"#, "next_id=-1 outside"),
            (r#"{"symbol_to_id":{},"id_to_symbol":{},"next_id":2147483649}"#, "next_id=2147483649 outside"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"00":"a"},"next_id":1}"#, "key \"00\" is not"),
            (r#"{"symbol_to_id":{"a":1},"id_to_symbol":{"01":"a"},"next_id":2}"#, "key \"01\" is not"),
            (r#"{"symbol_to_id":{"a":1},"id_to_symbol":{"+1":"a"},"next_id":2}"#, "key \"+1\" is not"),
            (r#"{"symbol_to_id":{"a":1},"id_to_symbol":{" 1":"a"},"next_id":2}"#, "key \" 1\" is not"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"":"a"},"next_id":2}"#, "key \"\" is not"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"-0":"a"},"next_id":2}"#, "key \"-0\" is not"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"x":"a"},"next_id":2}"#, "key \"x\" is not"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"99999999999999999999999":"a"},"next_id":2}"#, "is not"),
            (r#"{"symbol_to_id":{"a":5},"id_to_symbol":{"5":"a"},"next_id":5}"#, "key \"5\" outside"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"0":"a","0":"b"},"next_id":2}"#, "id 0 appears twice"),
            (r#"{"symbol_to_id":{"a":-1},"id_to_symbol":{},"next_id":2}"#, "id -1 of \"a\" outside"),
            (r#"{"symbol_to_id":{"a":2},"id_to_symbol":{"0":"a"},"next_id":2}"#, "id 2 of \"a\" outside"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"0":"b"},"next_id":2}"#, "not the inverse"),
            (r#"{"symbol_to_id":{"a":1},"id_to_symbol":{"0":"a"},"next_id":2}"#, "not the inverse"),
            (
                r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"0":"a","1":"b"},"next_id":2}"#,
                "has 2 entries but symbol_to_id has 1",
            ),
            (r#"{"symbol_to_id":{"a":0,"a":0},"id_to_symbol":{"0":"a"},"next_id":2}"#, "has 2"),
            (r#"{"symbol_to_id":{"a":0,"a":1},"id_to_symbol":{"0":"a","1":"a"},"next_id":2}"#, "two ids"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"0":"a"},"vocab_size":2,"next_id":2}"#, "vocab_size=2"),
        ];
        for (json, expected) in cases {
            let text = corrupt_text(json);
            assert!(text.starts_with("test doc: "), "{text}");
            assert!(text.contains(expected), "{json}: {text}");
        }
        let err = load(r#"{"symbol_to_id":{"a":1},"id_to_symbol":{"0":"a"},"next_id":2}"#).unwrap_err();
        assert!(err.to_string().starts_with("corrupt vocabulary in test doc: "), "{err}");
    }

    #[test]
    fn optional_and_extra_fields() {
        // vocab_size absent or null is not checked; unknown fields (a database's _id) are ignored; class optional.
        for json in [
            r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"0":"a"},"next_id":1}"#,
            r#"{"_id":{"$oid":"x"},"symbol_to_id":{"a":0},"id_to_symbol":{"0":"a"},"vocab_size":null,"next_id":1}"#,
        ] {
            let doc = parse(json).unwrap();
            assert_eq!(doc.vocab_size, None);
            assert_eq!(doc.into_vocabulary("t").unwrap().id("a"), Some(0));
        }
        let empty = load(r#"{"symbol_to_id":{},"id_to_symbol":{},"next_id":0}"#).unwrap();
        assert!(empty.is_empty());
        // The largest next_id is allowed, and costs nothing for the ids never used.
        let top = load(r#"{"symbol_to_id":{"z":2147483647},"id_to_symbol":{"2147483647":"z"},"next_id":2147483648}"#)
            .unwrap();
        assert_eq!(top.id("z"), Some(MAX_SYMBOL_ID));
        assert!(top.memory_bytes() < 1 << 16);
    }

    /// Shapes the typed parse refuses: wrong types (bool, float, string ids), missing fields, wrong class.
    #[test]
    fn malformed_documents_do_not_parse() {
        for (json, expected) in [
            (r#"{"symbol_to_id":{"a":true},"id_to_symbol":{"0":"a"},"next_id":1}"#, "boolean"),
            (r#"{"symbol_to_id":{"a":0.0},"id_to_symbol":{"0":"a"},"next_id":1}"#, "floating point"),
            (r#"{"symbol_to_id":{"a":"0"},"id_to_symbol":{"0":"a"},"next_id":1}"#, "string"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"0":1},"next_id":1}"#, "integer"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"0":"a"},"next_id":1.0}"#, "floating point"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"0":"a"},"next_id":true}"#, "boolean"),
            (r#"{"symbol_to_id":{"a":0},"id_to_symbol":{"0":"a"},"vocab_size":"1","next_id":1}"#, "string"),
            (r#"{"symbol_to_id":[],"id_to_symbol":{},"next_id":0}"#, "mapping"),
            (r#"{"id_to_symbol":{},"next_id":0}"#, "missing field `symbol_to_id`"),
            (r#"{"symbol_to_id":{},"next_id":0}"#, "missing field `id_to_symbol`"),
            (r#"{"symbol_to_id":{},"id_to_symbol":{}}"#, "missing field `next_id`"),
            (r#"{"next_id":0,"next_id":0,"symbol_to_id":{},"id_to_symbol":{}}"#, "duplicate field `next_id`"),
            (r#"{"class":"other","symbol_to_id":{},"id_to_symbol":{},"next_id":0}"#, "'class' is \"other\""),
            (r#"[]"#, "vocabulary document"),
        ] {
            let err = parse(json).expect_err(json).to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
        // A file must say what it is.
        let classless = r#"{"symbol_to_id":{},"id_to_symbol":{},"next_id":0}"#;
        let err = serde_json::from_str::<StoredDocument>(classless).err().expect("refused").to_string();
        assert!(err.contains("'class' is missing"), "{err}");
    }

    /// Output is Python's `json.dumps(doc, ensure_ascii=True, separators=(",", ":"))`, byte for byte (expected
    /// bytes written out by hand from Python's rules), and reads back to the same vocabulary.
    #[test]
    fn serializes_as_python_does() {
        let mut vocab = Vocabulary::new();
        vocab.push_all(&["a", "é", "🎉", "q\"\\\n\t\u{1}\u{7f}/", ""]).unwrap();
        let expected = concat!(
            r#"{"class":"gpu_vocabulary","symbol_to_id":{"a":0,"\u00e9":1,"\ud83c\udf89":2,"q\"\\\n\t\u0001\u007f/":3,"":4},"#,
            r#""id_to_symbol":{"0":"a","1":"\u00e9","2":"\ud83c\udf89","3":"q\"\\\n\t\u0001\u007f/","4":""},"#,
            r#""vocab_size":5,"next_id":5}"#
        );
        let mut live = Vec::new();
        to_ascii_json(&DocumentOf(&vocab), &mut live);
        assert_eq!(String::from_utf8(live.clone()).unwrap(), expected);
        let mut from_document = Vec::new();
        to_ascii_json(&vocab.document(), &mut from_document);
        assert_eq!(from_document, live);
        let back: StoredDocument = serde_json::from_slice(&live).unwrap();
        assert_eq!(back.0.into_vocabulary("t").unwrap(), vocab);
    }
}
