//! Typed getters over the spanned tree: each reads one value or table, reports a wrong type or
//! range at its span, and returns `None` so resolution goes on and collects every problem.

use super::Cx;
use super::inputs::read_index_file;
use crate::manifest::diag::did_you_mean;
use crate::manifest::schema::{ParamSpec, ParamType};
use crate::manifest::tree::{Node, Table, Value};
use crate::manifest::types::*;
use serde_json::Value as Json;

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Cx<'_> {
    pub(super) fn table<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n Table> {
        match &node.value {
            Value::Table(t) => Some(t),
            other => {
                self.d.error(
                    &node.span,
                    path,
                    format!("expected a table, found {}", other.type_name()),
                );
                None
            }
        }
    }

    /// Reports every key of `table` not in `allowed`, with a did-you-mean.
    pub(super) fn known_keys(&mut self, table: &Table, path: &str, allowed: &[&str]) {
        for e in &table.entries {
            if !allowed.contains(&e.key.as_str()) {
                let msg = format!("unknown key `{}`", e.key);
                match did_you_mean(&e.key, allowed.iter().copied()) {
                    Some(s) => self.d.error_hint(
                        &e.key_span,
                        &join(path, &e.key),
                        msg,
                        format!("did you mean `{s}`?"),
                    ),
                    None => self.d.error_hint(
                        &e.key_span,
                        &join(path, &e.key),
                        msg,
                        format!("expected one of: {}", allowed.join(", ")),
                    ),
                }
            }
        }
    }

    pub(super) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.d
                    .error(&node.span, path, "expected a non-empty string");
                None
            }
            other => {
                self.d.error(
                    &node.span,
                    path,
                    format!("expected a string, found {}", other.type_name()),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            ref other => {
                self.d.error(
                    &node.span,
                    path,
                    format!("expected true or false, found {}", other.type_name()),
                );
                None
            }
        }
    }

    pub(super) fn integer(&mut self, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
        match node.value {
            Value::Integer(v) if (min..=max).contains(&v) => Some(v),
            Value::Integer(v) => {
                let range = if max == i64::MAX {
                    format!("at least {min}")
                } else {
                    format!("between {min} and {max}")
                };
                self.d.error(
                    &node.span,
                    path,
                    format!("{v} is out of range: expected an integer {range}"),
                );
                None
            }
            ref other => {
                self.d.error(
                    &node.span,
                    path,
                    format!("expected an integer, found {}", other.type_name()),
                );
                None
            }
        }
    }

    /// A scalar or an array of scalars, as a list of nodes.
    pub(super) fn list<'n>(&mut self, node: &'n Node, path: &str) -> Vec<&'n Node> {
        match &node.value {
            Value::Array(items) => {
                if items.is_empty() {
                    self.d
                        .error(&node.span, path, "empty list: give at least one value");
                }
                items.iter().collect()
            }
            _ => vec![node],
        }
    }

    /// Validates `table` against `specs` (keys in `extra` are handled by the caller) and
    /// returns the resolved parameters with defaults filled in.
    pub(super) fn params(
        &mut self,
        table: &Table,
        path: &str,
        specs: &[&[ParamSpec]],
        extra: &[&str],
    ) -> Params {
        let all: Vec<&ParamSpec> = specs.iter().flat_map(|s| s.iter()).collect();
        let mut allowed: Vec<&str> = all.iter().map(|s| s.name).collect();
        allowed.extend_from_slice(extra);
        self.known_keys(table, path, &allowed);
        let mut out = Params::new();
        for spec in all {
            match table.get(spec.name) {
                Some(e) => {
                    if let Some(v) = self.param_value(&e.node, &join(path, spec.name), spec) {
                        out.insert(spec.name.to_string(), v);
                    }
                }
                None => {
                    if let Some(v) = spec.default.to_json() {
                        out.insert(spec.name.to_string(), v);
                    }
                }
            }
        }
        out
    }

    pub(super) fn param_value(
        &mut self,
        node: &Node,
        path: &str,
        spec: &ParamSpec,
    ) -> Option<Json> {
        match spec.ty {
            ParamType::Float {
                min,
                max,
                min_exclusive,
            } => {
                let v = match node.value {
                    Value::Float(v) => v,
                    Value::Integer(v) => v as f64,
                    ref other => {
                        self.d.error(
                            &node.span,
                            path,
                            format!("expected a number, found {}", other.type_name()),
                        );
                        return None;
                    }
                };
                let low_ok = if min_exclusive { v > min } else { v >= min };
                if !(v.is_finite() && low_ok && v <= max) {
                    let open = if min_exclusive { "(" } else { "[" };
                    self.d.error(
                        &node.span,
                        path,
                        format!("{v} is out of range: expected a number in {open}{min}, {max}]"),
                    );
                    return None;
                }
                Some(Json::from(v))
            }
            ParamType::Int { min, max } => self.integer(node, path, min, max).map(Json::from),
            ParamType::Bool => self.boolean(node, path).map(Json::from),
            ParamType::Str => self.string(node, path).map(Json::from),
            ParamType::Choice(choices) => {
                let s = self.string(node, path)?;
                if choices.contains(&s.as_str()) {
                    Some(Json::from(s))
                } else {
                    let hint = match did_you_mean(&s, choices.iter().copied()) {
                        Some(c) => format!("did you mean \"{c}\"?"),
                        None => format!("expected one of: {}", choices.join(", ")),
                    };
                    self.d
                        .error_hint(&node.span, path, format!("invalid value \"{s}\""), hint);
                    None
                }
            }
            ParamType::StrList => {
                let Value::Array(items) = &node.value else {
                    self.d.error(
                        &node.span,
                        path,
                        format!("expected an array, found {}", node.value.type_name()),
                    );
                    return None;
                };
                if items.is_empty() {
                    self.d
                        .error(&node.span, path, "empty list: give at least one value");
                    return None;
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    out.extend(self.string(item, &p).map(Json::from));
                }
                (out.len() == items.len()).then_some(Json::Array(out))
            }
            ParamType::IndexList { repeats } => {
                let indices = match &node.value {
                    Value::Array(items) => {
                        let mut out = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            let p = format!("{path}[{i}]");
                            out.push(self.integer(item, &p, 0, i64::MAX)? as u64);
                        }
                        out
                    }
                    Value::String(file) => {
                        let file = self.base_dir.join(file);
                        match read_index_file(&file) {
                            Ok(v) => v,
                            Err(msg) => {
                                self.d.error_hint(
                                    &node.span,
                                    path,
                                    msg,
                                    "give integers separated by whitespace or commas",
                                );
                                return None;
                            }
                        }
                    }
                    other => {
                        self.d.error(
                            &node.span,
                            path,
                            format!(
                                "expected a list of indices or a file name, found {}",
                                other.type_name()
                            ),
                        );
                        return None;
                    }
                };
                if indices.is_empty() {
                    self.d.error(&node.span, path, "no indices given");
                    return None;
                }
                let mut seen = std::collections::HashSet::with_capacity(indices.len());
                if let Some(dup) = indices.iter().find(|&&i| !repeats && !seen.insert(i)) {
                    self.d.error_hint(
                        &node.span,
                        path,
                        format!("index {dup} appears twice"),
                        "calibration images are drawn without replacement",
                    );
                    return None;
                }
                Some(Json::from(indices))
            }
            ParamType::File => {
                let name = self.string(node, path)?;
                let file = self.base_dir.join(&name);
                match std::fs::metadata(&file) {
                    Ok(m) if m.is_file() => {
                        let file = std::path::absolute(&file).unwrap_or(file);
                        Some(Json::from(file.to_string_lossy().into_owned()))
                    }
                    Ok(_) => {
                        self.d.error(
                            &node.span,
                            path,
                            format!("{} is not a file", file.display()),
                        );
                        None
                    }
                    Err(e) => {
                        self.d.error_hint(
                            &node.span,
                            path,
                            format!("cannot read {}: {e}", file.display()),
                            "paths are relative to the manifest's directory",
                        );
                        None
                    }
                }
            }
        }
    }
}
