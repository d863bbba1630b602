//! An owned, spanned TOML tree: the raw form of a manifest, 1:1 with the text.
//!
//! Built from `toml::de::DeTable` so every key and value keeps its byte span for diagnostics.

use std::ops::Range;
use toml::de::{DeTable, DeValue};

pub type Span = Range<usize>;

#[derive(Debug, Clone)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

/// A table's entries in source order of keys (sorted), with key spans.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub node: Node,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// Parses TOML text; a syntax error is returned as (span, message).
pub fn parse(src: &str) -> Result<Node, (Span, String)> {
    let root = DeTable::parse(src)
        .map_err(|e| (e.span().unwrap_or(0..0), e.message().trim().to_string()))?;
    let span = root.span();
    Ok(Node {
        span,
        value: Value::Table(convert_table(root.get_ref())),
    })
}

fn convert_table(table: &DeTable<'_>) -> Table {
    let mut entries: Vec<Entry> = table
        .iter()
        .map(|(k, v)| Entry {
            key: k.get_ref().to_string(),
            key_span: k.span(),
            node: convert(v.get_ref(), v.span()),
        })
        .collect();
    entries.sort_by_key(|e| e.key_span.start);
    Table { entries }
}

fn convert(value: &DeValue<'_>, span: Span) -> Node {
    let value = match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(v) => Value::Integer(v),
            Err(_) => Value::Float(f64::INFINITY),
        },
        DeValue::Float(f) => Value::Float(parse_float(f.as_str())),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(a) => {
            Value::Array(a.iter().map(|v| convert(v.get_ref(), v.span())).collect())
        }
        DeValue::Table(t) => Value::Table(convert_table(t)),
    };
    Node { span, value }
}

fn parse_float(s: &str) -> f64 {
    let cleaned: String = s.chars().filter(|c| *c != '_').collect();
    cleaned.parse().unwrap_or(f64::NAN)
}
