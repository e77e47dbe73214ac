//! Stable text ids of PROV nodes and their compact keys.
//!
//! Nodes derived from DLProv rows get ids computed from the row, so the same
//! row always has the same id, in SQL and in exported PROV documents:
//!
//! | node                         | id                         |
//! |------------------------------|----------------------------|
//! | dataflow (the plan)          | `dataflow:<tag>`           |
//! | dataflow execution           | `execution:<execution tag>`|
//! | task                         | `task:<task.id>`           |
//! | data scientist               | `scientist:<id>`           |
//! | hardware                     | `hardware:<id>`            |
//! | row of `<tag>.ds_<set>`      | `<tag>.<set>:<id>`         |
//!
//! Any other text (e.g. `ex:model-7`, from `prov.*` rows or imports) names a
//! user node as is.

use std::collections::{HashMap, HashSet};

use super::graph::NodeKind;

/// An interned string.
pub type Sym = u32;

/// Interned strings: execution and dataflow tags, `tag.set` dataset names,
/// user node ids.
#[derive(Debug, Default)]
pub struct Symbols {
    strings: Vec<Box<str>>,
    map: HashMap<Box<str>, Sym>,
    /// Syms of the `tag.set` names of known DLProv datasets.
    datasets: HashSet<Sym>,
}

impl Symbols {
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(id) = self.map.get(s) {
            return *id;
        }
        let id = Sym::try_from(self.strings.len()).unwrap_or(Sym::MAX);
        self.strings.push(s.into());
        self.map.insert(s.into(), id);
        id
    }

    pub fn get(&self, s: &str) -> Option<Sym> {
        self.map.get(s).copied()
    }

    pub fn text(&self, id: Sym) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }

    /// Register the dataset `tag.set`, so `tag.set:<id>` parses as its row.
    pub fn add_dataset(&mut self, tag: &str, set: &str) -> Sym {
        let id = self.intern(&format!("{tag}.{set}"));
        self.datasets.insert(id);
        id
    }

    fn dataset(&self, name: &str) -> Option<Sym> {
        self.get(name).filter(|s| self.datasets.contains(s))
    }

    pub fn heap_bytes(&self) -> usize {
        let text: usize = self.strings.iter().map(|s| s.len()).sum();
        text * 2 + self.strings.capacity() * 16 + self.map.capacity() * 24
    }
}

/// What a node is, compactly (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKey {
    Dataflow(Sym),
    Execution(Sym),
    Task(i64),
    Scientist(i64),
    Hardware(i64),
    Row { dataset: Sym, id: i64 },
    User(Sym),
}

impl NodeKey {
    /// The class of DLProv-derived nodes; `None` for user nodes.
    pub fn fixed_class(self) -> Option<NodeKind> {
        match self {
            NodeKey::Dataflow(_) | NodeKey::Row { .. } => Some(NodeKind::Entity),
            NodeKey::Execution(_) | NodeKey::Task(_) => Some(NodeKind::Activity),
            NodeKey::Scientist(_) | NodeKey::Hardware(_) => Some(NodeKind::Agent),
            NodeKey::User(_) => None,
        }
    }

    /// A short type name for DLProv-derived nodes (`dlprov:task`, ...).
    pub fn type_name(self) -> Option<&'static str> {
        Some(match self {
            NodeKey::Dataflow(_) => "dlprov:dataflow",
            NodeKey::Execution(_) => "dlprov:execution",
            NodeKey::Task(_) => "dlprov:task",
            NodeKey::Scientist(_) => "dlprov:scientist",
            NodeKey::Hardware(_) => "dlprov:hardware",
            NodeKey::Row { .. } => "dlprov:element",
            NodeKey::User(_) => return None,
        })
    }

    pub fn render(self, syms: &Symbols) -> String {
        match self {
            NodeKey::Dataflow(s) => format!("dataflow:{}", syms.text(s)),
            NodeKey::Execution(s) => format!("execution:{}", syms.text(s)),
            NodeKey::Task(id) => format!("task:{id}"),
            NodeKey::Scientist(id) => format!("scientist:{id}"),
            NodeKey::Hardware(id) => format!("hardware:{id}"),
            NodeKey::Row { dataset, id } => format!("{}:{id}", syms.text(dataset)),
            NodeKey::User(s) => syms.text(s).to_string(),
        }
    }

    /// The key `text` names, interning strings as needed.
    pub fn parse(text: &str, syms: &mut Symbols) -> NodeKey {
        match Self::parse_fixed(text, syms) {
            Parsed::Key(k) => k,
            Parsed::Tagged(prefix, local) => {
                let tag = syms.intern(local);
                if prefix == "dataflow" {
                    NodeKey::Dataflow(tag)
                } else {
                    NodeKey::Execution(tag)
                }
            }
            Parsed::User => NodeKey::User(syms.intern(text)),
        }
    }

    /// The key `text` names if every string it needs is already interned.
    pub fn parse_existing(text: &str, syms: &Symbols) -> Option<NodeKey> {
        match Self::parse_fixed(text, syms) {
            Parsed::Key(k) => Some(k),
            Parsed::Tagged(prefix, local) => {
                let tag = syms.get(local)?;
                Some(if prefix == "dataflow" {
                    NodeKey::Dataflow(tag)
                } else {
                    NodeKey::Execution(tag)
                })
            }
            Parsed::User => syms.get(text).map(NodeKey::User),
        }
    }

    fn parse_fixed<'a>(text: &'a str, syms: &Symbols) -> Parsed<'a> {
        let Some((prefix, local)) = text.split_once(':') else {
            return Parsed::User;
        };
        let number = local.parse::<i64>().ok();
        match (prefix, number) {
            ("dataflow" | "execution", _) if !local.is_empty() => Parsed::Tagged(prefix, local),
            ("task", Some(id)) => Parsed::Key(NodeKey::Task(id)),
            ("scientist", Some(id)) => Parsed::Key(NodeKey::Scientist(id)),
            ("hardware", Some(id)) => Parsed::Key(NodeKey::Hardware(id)),
            (_, Some(id)) if prefix.contains('.') => match syms.dataset(prefix) {
                Some(dataset) => Parsed::Key(NodeKey::Row { dataset, id }),
                None => Parsed::User,
            },
            _ => Parsed::User,
        }
    }
}

enum Parsed<'a> {
    Key(NodeKey),
    Tagged(&'a str, &'a str),
    User,
}
