//! The `[experiment]` section, and the named tables (`[models.NAME]`, …) every section shares.

use super::Cx;
use super::getters::join;
use crate::manifest::tree::{Entry, Span, Table};
use std::collections::BTreeMap;

/// The longest experiment name: `results/<name>/<name>_id.parquet` must fit 255 bytes.
const MAX_NAME: usize = 255 - "_id.parquet".len();

impl Cx<'_> {
    pub(super) fn experiment_section(&mut self, top: &Table) -> (Option<String>, String, bool) {
        let Some(entry) = top.get("experiment") else {
            self.d.error_hint(
                &(0..0),
                "experiment",
                "missing [experiment] section",
                "add [experiment] with name = \"...\"",
            );
            return (None, String::new(), false);
        };
        let Some(t) = self.table(&entry.node, "experiment") else {
            return (None, String::new(), false);
        };
        self.known_keys(
            t,
            "experiment",
            &["name", "description", "keep_pruned", "max_points"],
        );
        if let Some(e) = t.get("max_points")
            && let Some(n) = self.integer(&e.node, "experiment.max_points", 1, i64::MAX)
        {
            self.max_points = n as u64;
        }
        let name = match t.get("name") {
            Some(e) => self.string(&e.node, "experiment.name").filter(|n| {
                let ok = n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && !n.starts_with('.');
                // It names files: `<name>_id.parquet` must fit a file name (255 bytes).
                if ok && n.len() > MAX_NAME {
                    self.d.error_hint(
                        &e.node.span,
                        "experiment.name",
                        format!("the name has {} characters; at most {MAX_NAME} fit the file names it makes", n.len()),
                        "shorten it",
                    );
                    return false;
                }
                if !ok {
                    self.d.error_hint(
                        &e.node.span,
                        "experiment.name",
                        format!("invalid name \"{n}\""),
                        "use letters, digits, '-', '_' and '.' (it names the results directory)",
                    );
                }
                ok
            }),
            None => {
                self.d
                    .error(&entry.key_span, "experiment.name", "missing key `name`");
                None
            }
        };
        let description = t
            .get("description")
            .and_then(|e| self.string(&e.node, "experiment.description"))
            .unwrap_or_default();
        let keep = t
            .get("keep_pruned")
            .and_then(|e| self.boolean(&e.node, "experiment.keep_pruned"))
            .unwrap_or(false);
        (name, description, keep)
    }

    /// `[section.NAME]` tables → map of NAME → (key span, definition).
    pub(super) fn named_section<T>(
        &mut self,
        top: &Table,
        section: &str,
        mut each: impl FnMut(&mut Self, &Entry, &Table, &str) -> Option<T>,
    ) -> BTreeMap<String, (Span, T)> {
        let mut out = BTreeMap::new();
        let Some(entry) = top.get(section) else {
            return out;
        };
        let Some(t) = self.table(&entry.node, section) else {
            return out;
        };
        for e in &t.entries {
            let path = join(section, &e.key);
            if let Some(def_table) = self.table(&e.node, &path)
                && let Some(def) = each(self, e, def_table, &path)
            {
                out.insert(e.key.clone(), (e.key_span.clone(), def));
            }
        }
        out
    }
}
