//! Lenient streaming PROV-JSON reader.
//!
//! Records are converted one at a time as the JSON is parsed, so memory
//! holds the converted records, never the whole JSON tree: a yProv4ML
//! document whose metric series are multi-megabyte list strings turns each
//! string into columns as soon as it is read, and parks the columns in the
//! document's [`Spill`] (in a file once there are many).
//!
//! Leniency (what real producers write, `docs/prov.md`): `"$"` as string or
//! number, an id mapped to an array of attribute objects, `_:` blank or
//! named relation ids, undeclared `prov`/`xsd`, unprefixed ids and keys,
//! non-IRI namespaces, bundles. Unknown record types and malformed records
//! are errors naming the record (serde adds the line and column).

use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use serde::de::{self, DeserializeSeed, Error as _, MapAccess, Visitor};
use serde_json::{Map, Value as Json};

use super::json::values_from_json;
use super::model::{Attrs, RelationSpec, relation_spec};
use super::series::{InlineSeries, is_list_key};
use super::spill::{Parked, Spill};
use crate::error::{EngineError, Result};
use crate::lineage::NodeKind;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Section {
    Element(NodeKind),
    Relation(&'static RelationSpec),
}

impl Section {
    fn parse(key: &str) -> Option<Section> {
        Some(match key {
            "entity" => Section::Element(NodeKind::Entity),
            "activity" => Section::Element(NodeKind::Activity),
            "agent" => Section::Element(NodeKind::Agent),
            other => Section::Relation(relation_spec(other)?),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Section::Element(k) => k.name(),
            Section::Relation(s) => s.name,
        }
    }
}

/// One record as written (qualified names not yet resolved).
#[derive(Debug)]
pub struct RawRecord {
    pub section: Section,
    pub id: String,
    pub attrs: Attrs,
    /// Metric lists found in the record's attributes (yProv4ML's oldest
    /// layout), already parsed and checked.
    pub series: Option<Parked>,
}

impl RawRecord {
    /// Where the record is, for error messages.
    pub fn place(&self, bundle: Option<&str>) -> String {
        match bundle {
            Some(b) => format!("bundle '{b}', {} '{}'", self.section.name(), self.id),
            None => format!("{} '{}'", self.section.name(), self.id),
        }
    }
}

/// The document or one bundle.
#[derive(Debug, Default)]
pub struct RawContainer {
    pub bundle: Option<String>,
    pub prefixes: Vec<(String, String)>,
    pub records: Vec<RawRecord>,
}

/// A parsed document: `containers[0]` is the document, the rest bundles.
#[derive(Debug, Default)]
pub struct RawDoc {
    pub containers: Vec<RawContainer>,
    /// The records' metric series.
    pub spill: Spill,
}

/// Parse a PROV-JSON document from a reader. Metric series past a budget
/// wait in an unnamed file in `spill_dir` (the system's temporary
/// directory when `None`).
pub fn read_document(reader: impl Read, spill_dir: Option<PathBuf>) -> Result<RawDoc> {
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 16, reader));
    let mut doc = RawDoc {
        containers: vec![RawContainer::default()],
        spill: Spill::new(spill_dir),
    };
    ContainerSeed {
        doc: &mut doc,
        index: 0,
    }
    .deserialize(&mut de)
    .and_then(|_| de.end())
    .map_err(|e| EngineError::BadRequest(format!("invalid PROV-JSON: {e}")))?;
    Ok(doc)
}

struct ContainerSeed<'a> {
    doc: &'a mut RawDoc,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for ContainerSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ContainerSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PROV-JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let nested = self.index > 0;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "prefix" => {
                    let m: Map<String, Json> = map.next_value()?;
                    for (p, iri) in m {
                        let Json::String(iri) = iri else {
                            return Err(A::Error::custom(format!(
                                "prefix '{p}' must map to a string IRI"
                            )));
                        };
                        self.doc.containers[self.index].prefixes.push((p, iri));
                    }
                }
                "bundle" if !nested => map.next_value_seed(BundlesSeed {
                    doc: &mut *self.doc,
                })?,
                "bundle" => return Err(A::Error::custom("bundles cannot be nested")),
                other => {
                    let Some(section) = Section::parse(other) else {
                        return Err(A::Error::custom(format!(
                            "unknown PROV-JSON record type '{other}'{}",
                            bundle_suffix(&self.doc.containers[self.index])
                        )));
                    };
                    map.next_value_seed(SectionSeed {
                        out: &mut self.doc.containers[self.index],
                        spill: &mut self.doc.spill,
                        section,
                    })?;
                }
            }
        }
        Ok(())
    }
}

fn bundle_suffix(c: &RawContainer) -> String {
    c.bundle
        .as_ref()
        .map(|b| format!(" in bundle '{b}'"))
        .unwrap_or_default()
}

struct BundlesSeed<'a> {
    doc: &'a mut RawDoc,
}

impl<'de> DeserializeSeed<'de> for BundlesSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BundlesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of bundles")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(id) = map.next_key::<String>()? {
            self.doc.containers.push(RawContainer {
                bundle: Some(id),
                ..Default::default()
            });
            let index = self.doc.containers.len() - 1;
            map.next_value_seed(ContainerSeed {
                doc: &mut *self.doc,
                index,
            })?;
        }
        Ok(())
    }
}

struct SectionSeed<'a> {
    out: &'a mut RawContainer,
    spill: &'a mut Spill,
    section: Section,
}

impl<'de> DeserializeSeed<'de> for SectionSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SectionSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object of {} records", self.section.name())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(id) = map.next_key::<String>()? {
            let value: Json = map.next_value()?;
            let bodies = match value {
                Json::Array(items) => items,
                other => vec![other],
            };
            for body in bodies {
                let record = convert(self.section, &id, body, self.spill).map_err(|e| {
                    A::Error::custom(format!(
                        "{} '{}'{}: {e}",
                        self.section.name(),
                        id,
                        bundle_suffix(self.out)
                    ))
                })?;
                self.out.records.push(record);
            }
        }
        Ok(())
    }
}

fn convert(section: Section, id: &str, body: Json, spill: &mut Spill) -> Result<RawRecord, String> {
    let Json::Object(map) = body else {
        return Err(format!("expected an object of attributes, got {body}"));
    };
    let mut attrs = Attrs::new();
    let mut series: Option<InlineSeries> = None;
    for (k, v) in map {
        if let (Some(which), Json::String(s)) = (is_list_key(&k), &v) {
            series
                .get_or_insert_with(InlineSeries::default)
                .set(which, s)
                .map_err(|e| format!("attribute '{k}': {e}"))?;
            continue;
        }
        for value in values_from_json(&v).map_err(|e| format!("attribute '{k}': {e}"))? {
            attrs.push((k.clone(), value));
        }
    }
    let series = match series {
        Some(mut s) => {
            s.check()?;
            let parked = spill
                .park(s)
                .map_err(|e| format!("cannot set its metric points aside: {e}"))?;
            Some(parked)
        }
        None => None,
    };
    Ok(RawRecord {
        section,
        id: id.to_string(),
        attrs,
        series,
    })
}
