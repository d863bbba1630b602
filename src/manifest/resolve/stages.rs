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
                "backend",
                "slurm",
            ],
        );
        if let Some(e) = t.get("backend") {
            match self.string(&e.node, "resources.backend").as_deref() {
                Some("local") => r.backend = BackendKind::Local,
                Some("slurm") => r.backend = BackendKind::Slurm,
                Some(other) => self.d.error_hint(
                    &e.node.span,
                    "resources.backend",
                    format!("unknown backend \"{other}\""),
                    "write \"local\" (this machine's devices) or \"slurm\"",
                ),
                None => {}
            }
        }
        if let Some(e) = t.get("slurm")
            && let Some(sub) = self.table(&e.node, "resources.slurm")
        {
            r.slurm = self.slurm(sub);
        }
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

    /// `[resources.slurm]` and its per-kind tables.
    fn slurm(&mut self, t: &Table) -> SlurmResources {
        let mut keys: Vec<&str> = SLURM_REQUEST_KEYS.to_vec();
        keys.push("max_queued");
        keys.extend(STAGE_KIND_NAMES);
        keys.push("intrinsic_dimension");
        self.known_keys(t, "resources.slurm", &keys);
        let mut s = SlurmResources {
            default: self.slurm_request(t, "resources.slurm"),
            ..SlurmResources::default()
        };
        if let Some(e) = t.get("max_queued") {
            s.max_queued = self
                .integer(&e.node, "resources.slurm.max_queued", 1, 1_000_000)
                .unwrap_or(DEFAULT_MAX_QUEUED as i64) as u32;
        }
        for e in &t.entries {
            let kind = if e.key == "intrinsic_dimension" {
                "intrinsic-dimension"
            } else {
                e.key.as_str()
            };
            if !STAGE_KIND_NAMES.contains(&kind) {
                continue;
            }
            let path = join("resources.slurm", &e.key);
            if let Some(sub) = self.table(&e.node, &path) {
                self.known_keys(sub, &path, &SLURM_REQUEST_KEYS);
                let request = self.slurm_request(sub, &path);
                s.per_kind.insert(kind.to_string(), request);
            }
        }
        s
    }

    /// The request keys of one `[resources.slurm]` table (the default or a kind's).
    fn slurm_request(&mut self, t: &Table, path: &str) -> SlurmRequest {
        let mut r = SlurmRequest::default();
        for key in ["partition", "account", "gres", "time", "mem"] {
            let Some(e) = t.get(key) else { continue };
            let p = join(path, key);
            let Some(v) = self.string(&e.node, &p) else {
                continue;
            };
            let problem = match key {
                "time" if !slurm_time_is_valid(&v) => Some((
                    format!("invalid time limit \"{v}\""),
                    "Slurm's forms: \"MINUTES\", \"HH:MM:SS\", \"D-HH:MM:SS\" (e.g. \"4:00:00\")",
                )),
                "mem" if !slurm_mem_is_valid(&v) => Some((
                    format!("invalid memory size \"{v}\""),
                    "a number with an optional K, M, G or T suffix (e.g. \"32G\")",
                )),
                _ if v.chars().any(char::is_whitespace) => Some((
                    format!("\"{v}\" contains white space"),
                    "Slurm names and gres specifications have none (e.g. gres = \"gpu:1\")",
                )),
                _ => None,
            };
            if let Some((message, hint)) = problem {
                self.d.error_hint(&e.node.span, &p, message, hint);
                continue;
            }
            match key {
                "partition" => r.partition = Some(v),
                "account" => r.account = Some(v),
                "gres" => r.gres = Some(v),
                "time" => r.time = Some(v),
                _ => r.mem = Some(v),
            }
        }
        if let Some(e) = t.get("cpus_per_task") {
            r.cpus_per_task = self
                .integer(&e.node, &join(path, "cpus_per_task"), 1, 4096)
                .map(|v| v as u32);
        }
        if let Some(e) = t.get("extra") {
            let p = join(path, "extra");
            for (i, item) in self.list(&e.node, &p).into_iter().enumerate() {
                let p = format!("{p}[{i}]");
                let Some(v) = self.string(item, &p) else {
                    continue;
                };
                if !v.starts_with('-') || v.contains('\n') {
                    self.d.error_hint(
                        &item.span,
                        &p,
                        format!("\"{v}\" is not one sbatch option"),
                        "write each option as one item, e.g. extra = [\"--qos=normal\", \"--constraint=a100\"]",
                    );
                } else {
                    r.extra.push(v);
                }
            }
        }
        r
    }
}

const SLURM_REQUEST_KEYS: [&str; 7] = [
    "partition",
    "account",
    "gres",
    "time",
    "mem",
    "cpus_per_task",
    "extra",
];

/// Slurm's time-limit forms: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
fn slurm_time_is_valid(s: &str) -> bool {
    let numbers = |part: &str, most: usize| {
        let fields: Vec<&str> = part.split(':').collect();
        fields.len() <= most
            && fields
                .iter()
                .all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    };
    match s.split_once('-') {
        Some((days, rest)) => numbers(days, 1) && numbers(rest, 3),
        None => numbers(s, 3),
    }
}

/// A Slurm memory size: digits and an optional unit.
fn slurm_mem_is_valid(s: &str) -> bool {
    let digits = s.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty() && s.len() - digits.len() <= 1 && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod slurm_tests {
    use super::{slurm_mem_is_valid, slurm_time_is_valid};

    #[test]
    fn slurm_time_and_memory_forms() {
        for ok in ["30", "30:00", "4:00:00", "1-0", "1-12:00", "2-00:00:00"] {
            assert!(slurm_time_is_valid(ok), "{ok}");
        }
        for bad in ["", "1h", "1:2:3:4", "-1", "1-", "a-1", "1:"] {
            assert!(!slurm_time_is_valid(bad), "{bad}");
        }
        for ok in ["32G", "500M", "4096", "1t"] {
            assert!(slurm_mem_is_valid(ok), "{ok}");
        }
        for bad in ["", "G", "32GB", "3.5G", "-1G"] {
            assert!(!slurm_mem_is_valid(bad), "{bad}");
        }
    }
}
