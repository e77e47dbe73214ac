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
//! In the index a node is a [`PackedKey`] (8 bytes). Tags and dataset names
//! live once in [`Symbols`], an arena with a hash table of offsets. A user
//! node's text lives once in a second arena, without a table: its key holds
//! where (a [`UserName`]), and the graph's node index, which hashes user
//! keys by their text, is what finds it again.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use tracing::error;

use super::graph::NodeKind;

/// An interned string.
pub type Sym = u32;

/// A DLProv dataset (`tag.set`), by registration order.
pub type DatasetId = u16;

/// Where a user node's text is in [`Symbols`]' name arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserName {
    start: u32,
    len: u32,
}

/// User node texts longer than this are cut (they must fit a packed key).
const NAME_LEN_BITS: u32 = 29;

/// Interned strings (execution and dataflow tags, user node ids) in one
/// arena, and the registered DLProv datasets.
#[derive(Debug, Default)]
pub struct Symbols {
    text: String,
    ends: Vec<u32>,
    /// User node texts, back to back; see [`UserName`].
    names: String,
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

    /// Store a user node's text (the caller checked it is new and cut it
    /// with [`indexable`]).
    pub fn push_name(&mut self, s: &str) -> UserName {
        let end = self.names.len() + s.len();
        let (Ok(start), Ok(_)) = (u32::try_from(self.names.len()), u32::try_from(end)) else {
            error!("lineage name arena is full (4 GiB of ids); id not indexed");
            return UserName { start: 0, len: 0 };
        };
        self.names.push_str(s);
        UserName {
            start,
            len: s.len() as u32,
        }
    }

    /// A user node's text.
    pub fn name(&self, n: UserName) -> &str {
        let start = n.start as usize;
        self.names.get(start..start + n.len as usize).unwrap_or("")
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
        self.names.shrink_to_fit();
    }

    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * 4
            + table_bytes(self.table.capacity(), 4)
            + self.names.capacity()
    }
}

/// Heap bytes of a hashbrown table holding `capacity` entries of `entry`
/// bytes: a power-of-two number of buckets, 7/8 usable, one control byte
/// each.
pub fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    (capacity * 8 / 7).next_power_of_two() * (entry + 1)
}

/// The part of a user node's text the index keeps: all of it, unless it
/// is longer than a packed key can say (512 MiB), when it is cut.
pub fn indexable(text: &str) -> &str {
    if text.len() < 1 << NAME_LEN_BITS {
        return text;
    }
    let mut cut = (1 << NAME_LEN_BITS) - 1;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    error!(
        len = text.len(),
        "lineage: user node id too long; indexing its prefix"
    );
    &text[..cut]
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
    User(UserName),
}

/// A [`NodeKey`] in 8 bytes: a 3-bit tag and the payload (a symbol, a
/// 61-bit id, a 16-bit dataset with a 45-bit row id, or a user name's
/// 32-bit start and 29-bit length). Keys whose ids do not fit are indexed
/// as user nodes named by their text.
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
    pub fn user(name: UserName) -> PackedKey {
        PackedKey((name.len as u64) << 32 | name.start as u64)
    }

    /// The user name of a user node's key.
    pub fn user_name(self) -> Option<UserName> {
        (self.0 >> TAG_SHIFT == 0).then(|| self.name_bits())
    }

    /// The payload read as a user name (meaningful for tag 0 only).
    fn name_bits(self) -> UserName {
        UserName {
            start: self.0 as u32,
            len: (self.0 >> 32) as u32,
        }
    }

    pub fn pack(key: NodeKey) -> Option<PackedKey> {
        let tagged = |tag: u64, payload: u64| Some(PackedKey(tag << TAG_SHIFT | payload));
        match key {
            NodeKey::User(name) => Some(PackedKey::user(name)),
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
            _ => NodeKey::User(self.name_bits()),
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
            NodeKey::User(name) => syms.name(name).to_string(),
        }
    }

    /// What `text` names: a DLProv key (interning its tag if needed), or
    /// `None` for a user node's text.
    pub fn parse(text: &str, syms: &mut Symbols) -> Option<NodeKey> {
        match Self::parse_fixed(text, syms) {
            Parsed::Key(k) => Some(k),
            Parsed::Tagged(prefix, local) => {
                let tag = syms.intern(local);
                Some(if prefix == "dataflow" {
                    NodeKey::Dataflow(tag)
                } else {
                    NodeKey::Execution(tag)
                })
            }
            Parsed::User => None,
        }
    }

    /// What `text` names if every string it needs is already interned:
    /// `Known(key)`, `User` for a user node's text, `Absent` when no node
    /// can have this id.
    pub fn parse_existing(text: &str, syms: &Symbols) -> Existing {
        match Self::parse_fixed(text, syms) {
            Parsed::Key(k) => Existing::Known(k),
            Parsed::Tagged(prefix, local) => match syms.get(local) {
                Some(tag) => Existing::Known(if prefix == "dataflow" {
                    NodeKey::Dataflow(tag)
                } else {
                    NodeKey::Execution(tag)
                }),
                None => Existing::Absent,
            },
            Parsed::User => Existing::User,
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

/// See [`NodeKey::parse_existing`].
pub enum Existing {
    Known(NodeKey),
    User,
    Absent,
}

enum Parsed<'a> {
    Key(NodeKey),
    Tagged(&'a str, &'a str),
    User,
}
