//! The W3C PROV data model as provdb reads and writes it: documents of
//! elements (entities, activities, agents) and relations, each with
//! attributes whose values are typed literals.
//!
//! Identifiers and attribute keys are qualified names written as text
//! (`prefix:local`), already in provdb's prefixes; the writers declare the
//! namespaces they use.

use crate::lineage::NodeKind;

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A plain string (`xsd:string`).
    Str(String),
    /// A language-tagged string.
    Lang {
        text: String,
        lang: String,
    },
    /// A literal with a datatype (`xsd:double`, `xsd:long`, `xsd:dateTime`...).
    Typed {
        lexical: String,
        datatype: String,
    },
    Bool(bool),
    /// A qualified name (written `'p:x'` in PROV-N).
    QName(String),
}

impl Value {
    pub fn typed(lexical: impl Into<String>, datatype: &str) -> Value {
        Value::Typed {
            lexical: lexical.into(),
            datatype: datatype.to_string(),
        }
    }

    pub fn long(v: i64) -> Value {
        Value::typed(v.to_string(), "xsd:long")
    }

    /// A double, or `None` for values PROV literals cannot carry exactly
    /// (NaN and infinities are written as `xsd:double` INF/NaN).
    pub fn double(v: f64) -> Value {
        let lexical = if v.is_nan() {
            "NaN".to_string()
        } else if v.is_infinite() {
            if v > 0.0 { "INF" } else { "-INF" }.to_string()
        } else {
            format!("{v:?}")
        };
        Value::typed(lexical, "xsd:double")
    }

    /// The value as plain text (the lexical form for typed values).
    pub fn text(&self) -> String {
        match self {
            Value::Str(s) | Value::QName(s) => s.clone(),
            Value::Lang { text, .. } => text.clone(),
            Value::Typed { lexical, .. } => lexical.clone(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

/// Attributes in document order; a key may repeat (several values).
pub type Attrs = Vec<(String, Value)>;

/// An entity, activity or agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub class: NodeKind,
    pub id: String,
    /// Activities only: `prov:startTime`, `prov:endTime` (xsd:dateTime).
    pub start: Option<String>,
    pub end: Option<String>,
    pub attrs: Attrs,
}

impl Element {
    pub fn new(class: NodeKind, id: impl Into<String>) -> Element {
        Element {
            class,
            id: id.into(),
            start: None,
            end: None,
            attrs: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Element {
        self.attrs.push((key.to_string(), value));
        self
    }
}

/// The shape of one PROV relation type.
#[derive(Debug, PartialEq, Eq)]
pub struct RelationSpec {
    /// The PROV-JSON key and PROV-N name (`wasGeneratedBy`).
    pub name: &'static str,
    /// Formal arguments in PROV-N order. The first two are the relation's
    /// subject and object in the graph.
    pub args: &'static [&'static str],
    /// Index of the time argument, if any (written as a bare dateTime).
    pub time_arg: Option<usize>,
}

macro_rules! spec {
    ($name:literal, [$($a:literal),*], $t:expr) => {
        RelationSpec { name: $name, args: &[$($a),*], time_arg: $t }
    };
}

/// Every PROV relation type (PROV-DM; PROV-JSON and PROV-N share them).
pub const RELATIONS: &[RelationSpec] = &[
    spec!(
        "wasGeneratedBy",
        ["prov:entity", "prov:activity", "prov:time"],
        Some(2)
    ),
    spec!(
        "used",
        ["prov:activity", "prov:entity", "prov:time"],
        Some(2)
    ),
    spec!("wasInformedBy", ["prov:informed", "prov:informant"], None),
    spec!(
        "wasStartedBy",
        ["prov:activity", "prov:trigger", "prov:starter", "prov:time"],
        Some(3)
    ),
    spec!(
        "wasEndedBy",
        ["prov:activity", "prov:trigger", "prov:ender", "prov:time"],
        Some(3)
    ),
    spec!(
        "wasInvalidatedBy",
        ["prov:entity", "prov:activity", "prov:time"],
        Some(2)
    ),
    spec!(
        "wasDerivedFrom",
        [
            "prov:generatedEntity",
            "prov:usedEntity",
            "prov:activity",
            "prov:generation",
            "prov:usage"
        ],
        None
    ),
    spec!("wasAttributedTo", ["prov:entity", "prov:agent"], None),
    spec!(
        "wasAssociatedWith",
        ["prov:activity", "prov:agent", "prov:plan"],
        None
    ),
    spec!(
        "actedOnBehalfOf",
        ["prov:delegate", "prov:responsible", "prov:activity"],
        None
    ),
    spec!(
        "wasInfluencedBy",
        ["prov:influencee", "prov:influencer"],
        None
    ),
    spec!("alternateOf", ["prov:alternate1", "prov:alternate2"], None),
    spec!(
        "specializationOf",
        ["prov:specificEntity", "prov:generalEntity"],
        None
    ),
    spec!(
        "mentionOf",
        ["prov:specificEntity", "prov:generalEntity", "prov:bundle"],
        None
    ),
    spec!("hadMember", ["prov:collection", "prov:entity"], None),
];

/// The spec of a relation type, by its exact name.
pub fn relation_spec(name: &str) -> Option<&'static RelationSpec> {
    RELATIONS.iter().find(|s| s.name == name)
}

/// A relation: its type, optional identifier, formal arguments (subject and
/// object always present) and other attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub spec: &'static RelationSpec,
    /// `None` for anonymous relations (`_:idN` in PROV-JSON).
    pub id: Option<String>,
    /// One slot per formal argument of `spec`.
    pub args: Vec<Option<String>>,
    pub attrs: Attrs,
}

impl Relation {
    pub fn new(spec: &'static RelationSpec, subject: &str, object: &str) -> Relation {
        let mut args = vec![None; spec.args.len()];
        args[0] = Some(subject.to_string());
        args[1] = Some(object.to_string());
        Relation {
            spec,
            id: None,
            args,
            attrs: Vec::new(),
        }
    }

    pub fn subject(&self) -> &str {
        self.args[0].as_deref().unwrap_or_default()
    }

    pub fn object(&self) -> &str {
        self.args[1].as_deref().unwrap_or_default()
    }
}

/// A PROV document without bundles (what provdb exports), its namespace
/// declarations in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    /// (prefix, IRI); `prov` and `xsd` are predefined and never listed.
    pub namespaces: Vec<(String, String)>,
    /// The default namespace, for unprefixed identifiers.
    pub default_namespace: Option<String>,
    pub elements: Vec<Element>,
    pub relations: Vec<Relation>,
}
