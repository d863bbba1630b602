//! The `[grid]` section: axes, `zip`, `exclude` and `include`, expanded into grid points, and
//! how each method reads the sparsity axis.

use super::getters::join;
use super::{AXES, Cx, DENSE};
use crate::manifest::diag::did_you_mean;
use crate::manifest::schema::SparsityAxis;
use crate::manifest::tree::{Entry, Node, Span, Table, Value};
use crate::manifest::types::*;
use std::collections::{BTreeMap, BTreeSet};

pub(super) struct Names<'a> {
    pub(super) models: &'a BTreeMap<String, (Span, ModelDef)>,
    pub(super) datasets: &'a BTreeMap<String, (Span, DatasetDef)>,
    pub(super) methods: &'a BTreeMap<String, (Span, MethodDef)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum AxisValue {
    Name(String),
    Sparsity(Sparsity),
    Int(i64),
}

impl std::fmt::Display for AxisValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AxisValue::Name(s) => write!(f, "\"{s}\""),
            AxisValue::Sparsity(s) => write!(f, "{s}"),
            AxisValue::Int(i) => write!(f, "{i}"),
        }
    }
}

pub(super) fn to_point(p: &BTreeMap<&str, AxisValue>, overrides: Params) -> GridPoint {
    let name = |k: &str| match &p[k] {
        AxisValue::Name(s) => s.clone(),
        other => other.to_string(),
    };
    let int = |k: &str| match p[k] {
        AxisValue::Int(i) => i,
        _ => 0,
    };
    let sparsity = match p["sparsity"] {
        AxisValue::Sparsity(s) => s,
        _ => Sparsity::Fraction(0.0),
    };
    GridPoint {
        model: name("model"),
        dataset: name("dataset"),
        method: name("method"),
        sparsity,
        calibration_size: int("calibration_size") as u32,
        seed: int("seed") as u64,
        overrides,
    }
}

/// The span of the first value of grid axis `axis` that `matches`, else of the `[grid]` table.
pub(super) fn grid_value_span(top: &Table, axis: &str, matches: impl Fn(&Value) -> bool) -> Span {
    let Some(grid) = top.get("grid") else {
        return 0..0;
    };
    let Value::Table(t) = &grid.node.value else {
        return grid.key_span.clone();
    };
    let Some(e) = t.get(axis) else {
        return grid.key_span.clone();
    };
    let found = match &e.node.value {
        Value::Array(items) => items
            .iter()
            .find(|n| matches(&n.value))
            .map(|n| n.span.clone()),
        v if matches(v) => Some(e.node.span.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| grid.key_span.clone())
}

impl Cx<'_> {
    pub(super) fn grid(
        &mut self,
        entry: &Entry,
        models: &BTreeMap<String, (Span, ModelDef)>,
        datasets: &BTreeMap<String, (Span, DatasetDef)>,
        methods: &BTreeMap<String, (Span, MethodDef)>,
    ) -> Option<Vec<GridPoint>> {
        let t = self.table(&entry.node, "grid")?;
        let mut allowed: Vec<&str> = AXES.to_vec();
        allowed.extend(["zip", "exclude", "include"]);
        self.known_keys(t, "grid", &allowed);
        let names = Names {
            models,
            datasets,
            methods,
        };

        let dense_only = t.get("method").is_none() && t.get("sparsity").is_none();
        // Each axis: its values with their spans.
        let mut axes: BTreeMap<&str, Vec<(AxisValue, Span)>> = BTreeMap::new();
        let mut ok = true;
        for &axis in AXES {
            let path = join("grid", axis);
            let values = match t.get(axis) {
                Some(e) => {
                    let mut values: Vec<(AxisValue, Span)> = Vec::new();
                    for (i, node) in self.list(&e.node, &path).into_iter().enumerate() {
                        let p = if matches!(e.node.value, Value::Array(_)) {
                            format!("{path}[{i}]")
                        } else {
                            path.clone()
                        };
                        match self.axis_value(axis, node, &p, &names) {
                            Some(v) if values.iter().any(|(w, _)| *w == v) => {
                                self.d.error(
                                    &node.span,
                                    &p,
                                    format!("duplicate value {v} on axis `{axis}`"),
                                );
                                ok = false;
                            }
                            Some(v) => values.push((v, node.span.clone())),
                            None => ok = false,
                        }
                    }
                    ok &= !values.is_empty();
                    values
                }
                // A grid without `method` and `sparsity` evaluates (and fine-tunes) the dense
                // models only.
                None if dense_only && axis == "method" => {
                    vec![(AxisValue::Name(DENSE.into()), entry.key_span.clone())]
                }
                None if dense_only && axis == "sparsity" => {
                    vec![(
                        AxisValue::Sparsity(Sparsity::Fraction(0.0)),
                        entry.key_span.clone(),
                    )]
                }
                None => match axis {
                    "calibration_size" => vec![(AxisValue::Int(250), entry.key_span.clone())],
                    "seed" => vec![(AxisValue::Int(0), entry.key_span.clone())],
                    _ => {
                        self.d.error_hint(
                            &entry.key_span,
                            &path,
                            format!("missing grid axis `{axis}`"),
                            format!("add `{axis} = [...]` under [grid]"),
                        );
                        ok = false;
                        vec![]
                    }
                },
            };
            axes.insert(axis, values);
        }

        let groups = self.zip_groups(t, &axes);
        let excludes = self.selectors(t, "exclude", &axes, &names, false);
        let includes = self.selectors(t, "include", &axes, &names, true);
        if !ok || groups.is_none() {
            return None;
        }
        let groups = groups?;
        // Counted before anything is expanded: a huge grid is refused, not allocated.
        let count = groups
            .iter()
            .map(|g| axes[g[0]].len() as u64)
            .try_fold(1u64, u64::checked_mul)
            .unwrap_or(u64::MAX);
        if count > self.max_points {
            self.d.error_hint(
                &entry.key_span,
                "grid",
                format!(
                    "the grid expands to {count} points, more than the limit of {}",
                    self.max_points
                ),
                "split the sweep into several manifests, or raise `max_points` under [experiment]",
            );
            return None;
        }

        // Cartesian product over factors (a zip group is one factor).
        let mut points: Vec<BTreeMap<&str, AxisValue>> = vec![BTreeMap::new()];
        for group in &groups {
            // The factor's rows: one assignment of every axis in the group per position.
            let rows: Vec<Vec<(&str, &AxisValue)>> = (0..axes[group[0]].len())
                .map(|i| group.iter().map(|&axis| (axis, &axes[axis][i].0)).collect())
                .collect();
            let mut next = Vec::with_capacity(points.len() * rows.len());
            for p in &points {
                for row in &rows {
                    let mut q = p.clone();
                    for &(axis, value) in row {
                        q.insert(axis, value.clone());
                    }
                    next.push(q);
                }
            }
            points = next;
        }
        let mut out: Vec<GridPoint> = points
            .into_iter()
            .filter(|p| {
                !excludes
                    .iter()
                    .any(|(sel, _)| sel.iter().all(|(k, v)| p.get(k.as_str()) == Some(v)))
            })
            .map(|p| to_point(&p, Params::new()))
            .collect();
        for (sel, overrides) in includes {
            let mut full: BTreeMap<&str, AxisValue> = BTreeMap::new();
            for &axis in AXES {
                match sel.get(axis) {
                    Some(v) => {
                        full.insert(axis, v.clone());
                    }
                    None => {
                        full.insert(axis, axes[axis][0].0.clone());
                    }
                }
            }
            let point = to_point(&full, overrides);
            if !out.contains(&point) {
                out.push(point);
            }
        }
        self.check_sparsity_axis(&out, &axes, &names, &entry.key_span);
        if out.is_empty() {
            self.d.error_hint(
                &entry.key_span,
                "grid",
                "the grid is empty after exclusions",
                "remove a [[grid.exclude]] entry or add values",
            );
        }
        Some(out)
    }

    /// How each method reads the sparsity axis: 0 prunes nothing, so only a data-driven method
    /// (SLS), which ignores the axis, may take it; an n:m pattern is a weight pattern.
    pub(super) fn check_sparsity_axis(
        &mut self,
        points: &[GridPoint],
        axes: &BTreeMap<&str, Vec<(AxisValue, Span)>>,
        names: &Names,
        grid_span: &Span,
    ) {
        let zero = AxisValue::Sparsity(Sparsity::Fraction(0.0));
        let mut reported = BTreeSet::new();
        for p in points {
            if p.method == DENSE {
                continue;
            }
            let spec = self.spec_of(names.methods, &p.method);
            let axis = spec.map_or(SparsityAxis::Weights, |m| m.sparsity);
            if matches!(axis, SparsityAxis::MacsRemoved | SparsityAxis::UnitsRemoved)
                && let Sparsity::NM { .. } = p.sparsity
                && reported.insert(p.method.clone())
            {
                let span = axes["sparsity"]
                    .iter()
                    .find(|(v, _)| *v == AxisValue::Sparsity(p.sparsity))
                    .map_or_else(|| grid_span.clone(), |(_, s)| s.clone());
                self.d.error_hint(
                    &span,
                    "grid.sparsity",
                    format!(
                        "method `{}` removes a fraction of the {}; an n:m pattern means nothing to it",
                        p.method,
                        if axis == SparsityAxis::MacsRemoved { "multiply-accumulates" } else { "weighted masked units" }
                    ),
                    "give fractions, e.g. 0.5",
                );
                continue;
            }
            if p.sparsity != Sparsity::Fraction(0.0) {
                continue;
            }
            if axis == SparsityAxis::DataDriven || !reported.insert(p.method.clone()) {
                continue;
            }
            let span = axes["sparsity"]
                .iter()
                .find(|(v, _)| *v == zero)
                .map_or_else(|| grid_span.clone(), |(_, s)| s.clone());
            self.d.error_hint(
                &span,
                "grid.sparsity",
                format!("sparsity 0 with method `{}` prunes nothing", p.method),
                "every grid evaluates the dense model already: remove 0, or leave it to `sls` with [[grid.exclude]]",
            );
        }
    }

    pub(super) fn axis_value(
        &mut self,
        axis: &str,
        node: &Node,
        path: &str,
        names: &Names,
    ) -> Option<AxisValue> {
        match axis {
            "model" | "dataset" | "method" => {
                let s = self.string(node, path)?;
                let (defined, section): (Vec<&str>, &str) = match axis {
                    "model" => (names.models.keys().map(String::as_str).collect(), "models"),
                    "dataset" => (
                        names.datasets.keys().map(String::as_str).collect(),
                        "datasets",
                    ),
                    _ => {
                        let mut v: Vec<&str> = names.methods.keys().map(String::as_str).collect();
                        v.extend(self.method_names());
                        (v, "methods")
                    }
                };
                if defined.contains(&s.as_str()) {
                    return Some(AxisValue::Name(s));
                }
                let hint = match did_you_mean(&s, defined.iter().copied()) {
                    Some(c) => format!("did you mean \"{c}\"?"),
                    None => format!("define it as [{section}.{s}]"),
                };
                self.d
                    .error_hint(&node.span, path, format!("undefined {axis} \"{s}\""), hint);
                None
            }
            "sparsity" => self.sparsity(node, path).map(AxisValue::Sparsity),
            "calibration_size" => self
                .integer(node, path, 1, u32::MAX as i64)
                .map(AxisValue::Int),
            _ => self.integer(node, path, 0, i64::MAX).map(AxisValue::Int),
        }
    }

    pub(super) fn sparsity(&mut self, node: &Node, path: &str) -> Option<Sparsity> {
        match &node.value {
            Value::Float(v) if (0.0..1.0).contains(v) => Some(Sparsity::Fraction(*v)),
            Value::Integer(0) => Some(Sparsity::Fraction(0.0)),
            Value::Float(v) => {
                self.d.error_hint(
                    &node.span,
                    path,
                    format!("sparsity {v} is out of range"),
                    "a fraction of weights removed, in [0, 1)",
                );
                None
            }
            Value::Integer(v) => {
                self.d.error_hint(
                    &node.span,
                    path,
                    format!("sparsity {v} is out of range"),
                    "a fraction of weights removed, in [0, 1), e.g. 0.5",
                );
                None
            }
            Value::String(s) => {
                let parsed = s.split_once(':').and_then(|(n, m)| {
                    Some((n.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?))
                });
                match parsed {
                    Some((n, m)) if n >= 1 && n < m && m <= 1024 => Some(Sparsity::NM { n, m }),
                    _ => {
                        self.d.error_hint(
                            &node.span,
                            path,
                            format!("malformed n:m sparsity \"{s}\""),
                            "write \"n:m\" with 0 < n < m ≤ 1024, e.g. \"2:4\"",
                        );
                        None
                    }
                }
            }
            other => {
                self.d.error(
                    &node.span,
                    path,
                    format!(
                        "expected a fraction or an \"n:m\" string, found {}",
                        other.type_name()
                    ),
                );
                None
            }
        }
    }

    /// `zip = [["a", "b"], ...]` → factors in axis order, zip groups as one factor each.
    pub(super) fn zip_groups(
        &mut self,
        t: &Table,
        axes: &BTreeMap<&str, Vec<(AxisValue, Span)>>,
    ) -> Option<Vec<Vec<&'static str>>> {
        let mut zipped: Vec<Vec<&'static str>> = Vec::new();
        let mut ok = true;
        if let Some(e) = t.get("zip") {
            let Value::Array(groups) = &e.node.value else {
                self.d.error_hint(
                    &e.node.span,
                    "grid.zip",
                    "expected a list of axis-name lists",
                    "e.g. zip = [[\"sparsity\", \"calibration_size\"]]",
                );
                return None;
            };
            for (gi, g) in groups.iter().enumerate() {
                let path = format!("grid.zip[{gi}]");
                let Value::Array(members) = &g.value else {
                    self.d
                        .error(&g.span, &path, "expected a list of axis names");
                    ok = false;
                    continue;
                };
                let mut group = Vec::new();
                for (mi, m) in members.iter().enumerate() {
                    let p = format!("{path}[{mi}]");
                    let Some(name) = self.string(m, &p) else {
                        ok = false;
                        continue;
                    };
                    match AXES.iter().find(|a| **a == name) {
                        Some(a) if zipped.iter().flatten().chain(group.iter()).any(|x| x == a) => {
                            self.d.error(
                                &m.span,
                                &p,
                                format!("axis `{a}` appears in more than one zip group"),
                            );
                            ok = false;
                        }
                        Some(a) => group.push(*a),
                        None => {
                            let hint = did_you_mean(&name, AXES.iter().copied())
                                .map(|c| format!("did you mean \"{c}\"?"))
                                .unwrap_or_else(|| format!("axes: {}", AXES.join(", ")));
                            self.d.error_hint(
                                &m.span,
                                &p,
                                format!("unknown axis \"{name}\""),
                                hint,
                            );
                            ok = false;
                        }
                    }
                }
                if group.len() < 2 {
                    self.d
                        .error(&g.span, &path, "a zip group needs at least two axes");
                    ok = false;
                    continue;
                }
                let lens: Vec<usize> = group
                    .iter()
                    .map(|a| axes.get(a).map_or(0, Vec::len))
                    .collect();
                if lens.iter().any(|l| *l != lens[0]) {
                    let desc: Vec<String> = group
                        .iter()
                        .zip(&lens)
                        .map(|(a, l)| format!("{a} has {l}"))
                        .collect();
                    self.d.error(
                        &g.span,
                        &path,
                        format!("zipped axes must have equal lengths ({})", desc.join(", ")),
                    );
                    ok = false;
                }
                zipped.push(group);
            }
        }
        if !ok {
            return None;
        }
        let mut factors: Vec<Vec<&'static str>> = Vec::new();
        for &axis in AXES {
            if let Some(g) = zipped.iter().find(|g| g.contains(&axis)) {
                if !factors.contains(g) {
                    factors.push(g.clone());
                }
            } else {
                factors.push(vec![axis]);
            }
        }
        Some(factors)
    }

    /// `[[grid.exclude]]` (partial assignments) or `[[grid.include]]` (extra points, with
    /// optional `params` overrides of the method's parameters).
    pub(super) fn selectors(
        &mut self,
        t: &Table,
        key: &str,
        axes: &BTreeMap<&str, Vec<(AxisValue, Span)>>,
        names: &Names,
        include: bool,
    ) -> Vec<(BTreeMap<String, AxisValue>, Params)> {
        let mut out = Vec::new();
        let Some(e) = t.get(key) else { return out };
        let path = join("grid", key);
        let Value::Array(items) = &e.node.value else {
            self.d.error_hint(
                &e.node.span,
                &path,
                format!(
                    "expected an array of tables, found {}",
                    e.node.value.type_name()
                ),
                format!("write each entry as [[grid.{key}]]"),
            );
            return out;
        };
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(sel_table) = self.table(item, &p) else {
                continue;
            };
            let mut allowed: Vec<&str> = AXES.to_vec();
            if include {
                allowed.push("params");
            }
            self.known_keys(sel_table, &p, &allowed);
            let mut sel = BTreeMap::new();
            let mut ok = true;
            for &axis in AXES {
                let Some(v) = sel_table.get(axis) else {
                    if include && axes.get(axis).is_some_and(|vals| vals.len() > 1) {
                        self.d.error_hint(&item.span, &p, format!("missing `{axis}`"), format!("an included point names every axis with more than one value; `{axis}` has several"));
                        ok = false;
                    }
                    continue;
                };
                let vp = join(&p, axis);
                match self.axis_value(axis, &v.node, &vp, names) {
                    Some(value) => {
                        if !include
                            && !axes
                                .get(axis)
                                .is_some_and(|vals| vals.iter().any(|(x, _)| *x == value))
                        {
                            self.d.error_hint(&v.node.span, &vp, format!("{value} is not a value of axis `{axis}`, so this exclusion matches nothing"), "fix the value or remove the exclusion");
                            ok = false;
                        }
                        sel.insert(axis.to_string(), value);
                    }
                    None => ok = false,
                }
            }
            if !include && sel.is_empty() && ok {
                self.d.error(
                    &item.span,
                    &p,
                    "an exclusion needs at least one axis value (it would exclude everything)",
                );
                ok = false;
            }
            let mut overrides = Params::new();
            if let Some(pe) = sel_table.get("params") {
                let pp = join(&p, "params");
                let method = sel
                    .get("method")
                    .or_else(|| axes.get("method").and_then(|v| v.first()).map(|(v, _)| v));
                let kind = match method {
                    Some(AxisValue::Name(m)) => names
                        .methods
                        .get(m)
                        .map(|(_, d)| d.spec)
                        .or_else(|| self.method_spec(m)),
                    _ => None,
                };
                if let (Some(kind), Some(pt)) = (kind, self.table(&pe.node, &pp)) {
                    // Only the keys given override; defaults come from the method definition.
                    let given = self.params(pt, &pp, &[kind.params], &[]);
                    for entry in &pt.entries {
                        if let Some(v) = given.get(&entry.key) {
                            overrides.insert(entry.key.clone(), v.clone());
                        }
                    }
                }
            }
            if ok {
                out.push((sel, overrides));
            }
        }
        out
    }
}
