//! The `[stages]` and `[resources]` sections.

use super::Cx;
use super::getters::join;
use crate::manifest::schema::{
    EvaluateParams, FinetuneParams, IntrinsicDimensionParams, ParamSpec, RetrainParams, TypedParams,
};
use crate::manifest::tree::{Entry, Table, Value};
use crate::manifest::types::*;

impl Cx<'_> {
    pub(super) fn stages(&mut self, entry: Option<&Entry>) -> StageSettings {
        let empty = Table::default();
        let t = entry
            .and_then(|e| self.table(&e.node, "stages"))
            .unwrap_or(&empty);
        self.known_keys(
            t,
            "stages",
            &["evaluate", "retrain", "intrinsic_dimension", "finetune"],
        );
        let toggle = |cx: &mut Self, key: &str, specs: &[ParamSpec]| -> (bool, Params) {
            let path = join("stages", key);
            match t.get(key) {
                None => (false, cx.params(&empty, &path, &[specs], &[])),
                Some(e) => match &e.node.value {
                    Value::Bool(b) => (*b, cx.params(&empty, &path, &[specs], &[])),
                    Value::Table(sub) => {
                        let enabled = sub
                            .get("enabled")
                            .and_then(|x| cx.boolean(&x.node, &join(&path, "enabled")))
                            .unwrap_or(true);
                        (enabled, cx.params(sub, &path, &[specs], &["enabled"]))
                    }
                    other => {
                        cx.d.error(
                            &e.node.span,
                            &path,
                            format!(
                                "expected true, false or a table, found {}",
                                other.type_name()
                            ),
                        );
                        (false, Params::new())
                    }
                },
            }
        };
        let (_, evaluate_params) = toggle(self, "evaluate", EvaluateParams::SPECS);
        let (retrain, retrain_params) = toggle(self, "retrain", RetrainParams::SPECS);
        let (intrinsic_dimension, intrinsic_dimension_params) =
            toggle(self, "intrinsic_dimension", IntrinsicDimensionParams::SPECS);
        let (finetune, finetune_params) = toggle(self, "finetune", FinetuneParams::SPECS);
        StageSettings {
            retrain,
            intrinsic_dimension,
            finetune,
            evaluate_params,
            retrain_params,
            intrinsic_dimension_params,
            finetune_params,
        }
    }

    pub(super) fn resources(&mut self, entry: Option<&Entry>) -> Resources {
        let mut r = Resources::default();
        let Some(entry) = entry else { return r };
        let Some(t) = self.table(&entry.node, "resources") else {
            return r;
        };
        self.known_keys(
            t,
            "resources",
            &[
                "devices",
                "jobs_per_device",
                "threads",
                "checkpoint_minutes",
            ],
        );
        if let Some(e) = t.get("devices") {
            match &e.node.value {
                Value::String(s) if s == "auto" => {}
                Value::Array(items) if !items.is_empty() => {
                    let mut devices = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("resources.devices[{i}]");
                        if let Some(s) = self.string(item, &p) {
                            match Device::parse(&s) {
                                Some(d) if devices.contains(&d) => self.d.error(
                                    &item.span,
                                    &p,
                                    format!("device \"{s}\" is listed twice"),
                                ),
                                Some(d) => devices.push(d),
                                None => self.d.error_hint(
                                    &item.span,
                                    &p,
                                    format!("invalid device \"{s}\""),
                                    "write \"cpu\" or \"cuda:N\"",
                                ),
                            }
                        }
                    }
                    r.devices = DeviceRequest::List(devices);
                }
                _ => self.d.error_hint(
                    &e.node.span,
                    "resources.devices",
                    "expected \"auto\" or a non-empty list of devices",
                    "e.g. devices = [\"cuda:0\", \"cuda:1\"]",
                ),
            }
        }
        if let Some(e) = t.get("jobs_per_device") {
            r.jobs_per_device = self
                .integer(&e.node, "resources.jobs_per_device", 1, 256)
                .unwrap_or(1) as u32;
        }
        if let Some(e) = t.get("threads") {
            r.threads = self
                .integer(&e.node, "resources.threads", 0, 4096)
                .unwrap_or(0) as u32;
        }
        if let Some(e) = t.get("checkpoint_minutes") {
            r.checkpoint_minutes = self
                .integer(&e.node, "resources.checkpoint_minutes", 0, 10_080)
                .unwrap_or(r.checkpoint_minutes as i64) as u64;
        }
        r
    }
}
