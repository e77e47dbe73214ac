//! Stable text ids of PROV nodes, their compact keys, and the string
//! dictionary behind them.
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
//!
//! In the index a node is a [`PackedKey`] (8 bytes); strings live once in
//! [`Symbols`], an arena with a hash table of offsets.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use tracing::error;

use super::graph::NodeKind;

/// An interned string.
pub type Sym = u32;

/// A DLProv dataset (`tag.set`), by registration order.
pub type DatasetId = u16;

/// Interned strings (execution and dataflow tags, user node ids) in one
/// arena, and the registered DLProv datasets.
#[derive(Debug, Default)]
pub struct Symbols {
    text: String,
    ends: Vec<u32>,
    table: HashTable<Sym>,
    hasher: DefaultHashBuilder,
    datasets: Vec<Box<str>>,
    dataset_ids: HashMap<Box<str>, DatasetId>,
}

fn slice<'a>(text: &'a str, ends: &[u32], id: Sym) -> &'a str {
    let i = id as usize;
    let Some(&end) = ends.get(i) else {
        return "";
    };
    let start = if i == 0 { 0 } else { ends[i - 1] };
    text.get(start as usize..end as usize).unwrap_or("")
}

impl Symbols {
    pub fn intern(&mut self, s: &str) -> Sym {
        let hash = self.hasher.hash_one(s);
        let Symbols {
            text, ends, table, ..
        } = self;
        if let Some(&id) = table.find(hash, |&id| slice(text, ends, id) == s) {
            return id;
        }
        let id = Sym::try_from(ends.len()).unwrap_or(Sym::MAX);
        let Ok(end) = u32::try_from(text.len() + s.len()) else {
            error!("lineage symbol arena is full (4 GiB of ids); id not indexed");
            return Sym::MAX;
        };
        text.push_str(s);
        ends.push(end);
        let hasher = &self.hasher;
        let (text, ends) = (&self.text, &self.ends);
        self.table
            .insert_unique(hash, id, |&x| hasher.hash_one(slice(text, ends, x)));
        id
    }

    pub fn get(&self, s: &str) -> Option<Sym> {
        let hash = self.hasher.hash_one(s);
        self.table
            .find(hash, |&id| slice(&self.text, &self.ends, id) == s)
            .copied()
    }

    pub fn text(&self, id: Sym) -> &str {
        slice(&self.text, &self.ends, id)
    }

    /// Register the dataset `tag.set`, so `tag.set:<id>` parses as its row.
    pub fn add_dataset(&mut self, tag: &str, set: &str) -> DatasetId {
        let name = format!("{tag}.{set}");
        if let Some(id) = self.dataset_ids.get(name.as_str()) {
            return *id;
        }
        let id = DatasetId::try_from(self.datasets.len()).unwrap_or(DatasetId::MAX);
        self.datasets.push(name.clone().into());
        self.dataset_ids.insert(name.into(), id);
        id
    }

    pub fn dataset_name(&self, id: DatasetId) -> &str {
        self.datasets.get(id as usize).map_or("?", |s| s)
    }

    pub fn dataset(&self, name: &str) -> Option<DatasetId> {
        self.dataset_ids.get(name).copied()
    }

    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * 4 + self.table.capacity() * 5
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKey {
    Dataflow(Sym),
    Execution(Sym),
    Task(i64),
    Scientist(i64),
    Hardware(i64),
    Row { dataset: DatasetId, id: i64 },
    User(Sym),
}

/// A [`NodeKey`] in 8 bytes: a 3-bit tag and the payload (a symbol, a
/// 61-bit id, or a 16-bit dataset with a 45-bit row id). Keys whose ids do
/// not fit are indexed as user nodes named by their text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackedKey(u64);

const TAG_SHIFT: u32 = 61;
const ROW_ID_BITS: u32 = 45;

fn fits(v: i64, bits: u32) -> Option<u64> {
    let mask = (1u64 << bits) - 1;
    let packed = v as u64 & mask;
    (sign_extend(packed, bits) == v).then_some(packed)
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    ((v << (64 - bits)) as i64) >> (64 - bits)
}

impl PackedKey {
    /// A user node's key (always packs: the tag is 0).
    pub fn user(sym: Sym) -> PackedKey {
        PackedKey(sym as u64)
    }

    pub fn pack(key: NodeKey) -> Option<PackedKey> {
        let tagged = |tag: u64, payload: u64| Some(PackedKey(tag << TAG_SHIFT | payload));
        match key {
            NodeKey::User(s) => tagged(0, s as u64),
            NodeKey::Dataflow(s) => tagged(1, s as u64),
            NodeKey::Execution(s) => tagged(2, s as u64),
            NodeKey::Task(id) => tagged(3, fits(id, TAG_SHIFT)?),
            NodeKey::Scientist(id) => tagged(4, fits(id, TAG_SHIFT)?),
            NodeKey::Hardware(id) => tagged(5, fits(id, TAG_SHIFT)?),
            NodeKey::Row { dataset, id } => {
                tagged(6, (dataset as u64) << ROW_ID_BITS | fits(id, ROW_ID_BITS)?)
            }
        }
    }

    pub fn unpack(self) -> NodeKey {
        let payload = self.0 & ((1u64 << TAG_SHIFT) - 1);
        let sym = payload as Sym;
        match self.0 >> TAG_SHIFT {
            1 => NodeKey::Dataflow(sym),
            2 => NodeKey::Execution(sym),
            3 => NodeKey::Task(sign_extend(payload, TAG_SHIFT)),
            4 => NodeKey::Scientist(sign_extend(payload, TAG_SHIFT)),
            5 => NodeKey::Hardware(sign_extend(payload, TAG_SHIFT)),
            6 => NodeKey::Row {
                dataset: (payload >> ROW_ID_BITS) as DatasetId,
                id: sign_extend(payload & ((1u64 << ROW_ID_BITS) - 1), ROW_ID_BITS),
            },
            _ => NodeKey::User(sym),
        }
    }
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
            NodeKey::Row { dataset, id } => format!("{}:{id}", syms.dataset_name(dataset)),
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
