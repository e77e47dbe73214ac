//! Namespaces: how provdb's text ids become qualified names with real IRIs
//! in exported documents, and how the prefixes of imported documents map to
//! provdb's.
//!
//! Every database has a base IRI, `urn:provdb:<uuid>/`, created once and
//! kept in the metadata (key [`META_KEY`]). A prefix `p` that is not
//! registered means `<base>p/`: `task:42` is `urn:provdb:<uuid>/task/42`,
//! `alexnet.otrain:17` is `urn:provdb:<uuid>/alexnet.otrain/17`. Ids
//! without a prefix live in the default namespace `<base>id/`. Imported
//! documents register their namespaces: a new IRI keeps the document's
//! prefix when that prefix is free in provdb and gets `prefix_N` when not,
//! so two documents that bind `ex` to different IRIs never merge their
//! nodes.
//!
//! Local parts are percent-escaped in documents (`execution:run%201`) so
//! that ids with spaces and colons are valid PROV-N; import undoes it.

use std::collections::BTreeMap;

use provdb_storage::{Storage, WalOp};
use serde_json::json;

pub const META_KEY: &str = "prov.namespaces";
pub const PROV: &str = "http://www.w3.org/ns/prov#";
pub const XSD: &str = "http://www.w3.org/2001/XMLSchema#";
/// The XSD namespace of the 2000 draft, which some producers declare.
pub const XSD_DRAFT: &str = "http://www.w3.org/2000/10/XMLSchema#";
/// Vocabulary of the attributes provdb writes for DLProv records.
pub const DLPROV: &str = "urn:provdb:vocab:dlprov#";
/// Vocabulary of provdb's own attributes (`provdb:bundle`).
pub const PROVDB: &str = "urn:provdb:vocab:provdb#";

/// Prefixes with a fixed meaning in every database.
const FIXED: &[(&str, &str)] = &[
    ("prov", PROV),
    ("xsd", XSD),
    ("dlprov", DLPROV),
    ("provdb", PROVDB),
];

/// Prefixes of the ids provdb derives from DLProv rows.
pub const DERIVED: &[&str] = &["dataflow", "execution", "task", "scientist", "hardware"];

/// The database's namespace registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub base: String,
    /// Registered prefixes (from imports) and their IRIs.
    pub prefixes: BTreeMap<String, String>,
}

impl Registry {
    /// The stored registry, or a new one (with a fresh base IRI) and `true`
    /// when none is stored yet; the caller commits [`Registry::op`].
    pub fn load(storage: &Storage) -> (Registry, bool) {
        if let Some(v) = storage.meta_get(META_KEY) {
            let base = v["base"].as_str().map(str::to_string);
            let prefixes = v["prefixes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(base) = base {
                return (Registry { base, prefixes }, false);
            }
        }
        let base = format!("urn:provdb:{}/", uuid::Uuid::new_v4());
        (
            Registry {
                base,
                prefixes: BTreeMap::new(),
            },
            true,
        )
    }

    /// The stored registry, storing a new one first if there is none (so
    /// the base IRI, and every exported id, stays the same from then on).
    pub async fn ensure(storage: &Storage) -> crate::error::Result<Registry> {
        let (registry, fresh) = Registry::load(storage);
        if fresh {
            storage.commit(vec![registry.op()]).await.map_err(|e| {
                crate::error::EngineError::from(e).context("storing the namespace registry")
            })?;
        }
        Ok(registry)
    }

    /// The metadata write that stores this registry.
    pub fn op(&self) -> WalOp {
        WalOp::PutMeta {
            key: META_KEY.into(),
            value: json!({"base": self.base, "prefixes": self.prefixes}),
        }
    }

    /// The IRI of `prefix` (`""` is the default namespace).
    pub fn iri(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            return format!("{}id/", self.base);
        }
        if let Some((_, iri)) = FIXED.iter().find(|(p, _)| *p == prefix) {
            return iri.to_string();
        }
        match self.prefixes.get(prefix) {
            Some(iri) => iri.clone(),
            None => format!("{}{prefix}/", self.base),
        }
    }

    /// The provdb prefix of a namespace IRI, if known (`""` for the
    /// database's default namespace).
    pub fn prefix_of(&self, iri: &str) -> Option<String> {
        if iri == XSD_DRAFT {
            return Some("xsd".into());
        }
        if let Some((p, _)) = FIXED.iter().find(|(_, i)| *i == iri) {
            return Some(p.to_string());
        }
        if let Some(rest) = iri.strip_prefix(&self.base) {
            if rest == "id/" {
                return Some(String::new());
            }
            let derived = rest
                .strip_suffix('/')
                .filter(|p| valid_prefix(p) && !self.prefixes.contains_key(*p));
            if let Some(p) = derived {
                return Some(p.to_string());
            }
        }
        self.prefixes
            .iter()
            .find(|(_, i)| i.as_str() == iri)
            .map(|(p, _)| p.clone())
    }

    /// Register `iri` under `wanted` or, when `wanted` is taken (fixed,
    /// derived, registered, or `reserved`), under `wanted_N`.
    pub fn register(&mut self, wanted: &str, iri: &str, reserved: &dyn Fn(&str) -> bool) -> String {
        let wanted = if valid_prefix(wanted) {
            wanted.to_string()
        } else {
            prefix_from_iri(iri)
        };
        let taken = |p: &str| {
            FIXED.iter().any(|(f, _)| *f == p)
                || DERIVED.contains(&p)
                || self.prefixes.contains_key(p)
                || reserved(p)
        };
        let mut chosen = wanted.clone();
        let mut n = 1;
        while taken(&chosen) {
            chosen = format!("{wanted}_{n}");
            n += 1;
        }
        self.prefixes.insert(chosen.clone(), iri.to_string());
        chosen
    }
}

/// A prefix made from the last segment of an IRI (`mnist_exp_GR0_0` for a
/// default namespace of that name, `ml` for `http://example.org/ml#`).
pub fn prefix_from_iri(iri: &str) -> String {
    let trimmed = iri.trim_end_matches(['/', '#', ':']);
    let last = trimmed.rsplit(['/', '#', ':']).next().unwrap_or_default();
    let mut p: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !p.starts_with(|c: char| c.is_ascii_alphabetic()) {
        p.insert_str(0, "ns_");
    }
    p.truncate(64);
    p
}

/// Whether `p` is a PROV-N prefix: a letter, then letters, digits, `_`,
/// `-` or `.`, not ending with `.`.
pub fn valid_prefix(p: &str) -> bool {
    p.starts_with(|c: char| c.is_ascii_alphabetic())
        && !p.ends_with('.')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Split a text id into (prefix, local). Ids whose text before the first
/// `:` is not a valid prefix have no prefix.
pub fn split(id: &str) -> (&str, &str) {
    match id.split_once(':') {
        Some((p, l)) if valid_prefix(p) => (p, l),
        _ => ("", id),
    }
}

fn keep(c: u8, first: bool, last: bool) -> bool {
    c.is_ascii_alphanumeric()
        || c == b'_'
        || c == b'/'
        || (!first && c == b'-')
        || (!first && !last && c == b'.')
}

/// Percent-escape a local part so it is a valid PROV-N local name.
pub fn escape_local(local: &str) -> String {
    let bytes = local.as_bytes();
    let mut out = String::with_capacity(local.len());
    for (i, &b) in bytes.iter().enumerate() {
        if keep(b, i == 0, i + 1 == bytes.len()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undo [`escape_local`] (and any other `%XX` escapes); invalid escapes and
/// non-UTF-8 results are kept as written.
pub fn unescape_local(local: &str) -> String {
    if !local.contains('%') {
        return local.to_string();
    }
    let bytes = local.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| local.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for s in [
            "alexnet-2025-07-10 21:00:00.123456",
            "lr//training",
            "a%b",
            "x.",
            "-y",
            "ü",
        ] {
            let e = escape_local(s);
            assert!(e.bytes().all(|b| b.is_ascii_graphic()), "{e}");
            assert_eq!(unescape_local(&e), s);
        }
        assert_eq!(escape_local("task_1/ok-2.x"), "task_1/ok-2.x");
    }

    #[test]
    fn registry_maps_prefixes_both_ways() {
        let mut r = Registry {
            base: "urn:provdb:t/".into(),
            prefixes: BTreeMap::new(),
        };
        assert_eq!(r.iri("task"), "urn:provdb:t/task/");
        assert_eq!(r.prefix_of("urn:provdb:t/task/").as_deref(), Some("task"));
        assert_eq!(r.prefix_of("urn:provdb:t/id/").as_deref(), Some(""));
        assert_eq!(r.prefix_of(XSD_DRAFT).as_deref(), Some("xsd"));
        let no = |_: &str| false;
        assert_eq!(r.register("ex", "http://a/", &no), "ex");
        assert_eq!(r.register("ex", "http://b/", &no), "ex_1");
        assert_eq!(r.register("task", "http://c/", &no), "task_1");
        assert_eq!(r.prefix_of("http://b/").as_deref(), Some("ex_1"));
        assert_eq!(r.iri("ex_1"), "http://b/");
        assert_eq!(prefix_from_iri("mnist_exp_GR0_0"), "mnist_exp_GR0_0");
        assert_eq!(prefix_from_iri("urn:run:42/"), "ns_42");
        assert_eq!(split("alexnet.otrain:17"), ("alexnet.otrain", "17"));
        assert_eq!(split("my id:1"), ("", "my id:1"));
    }
}
