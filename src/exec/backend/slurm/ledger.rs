//! The durable ledger: per stage key, the Slurm job computing it (or being submitted for it),
//! its attempt and its last known state, in `<results>/slurm/ledger.json`.
//!
//! Invariants: it is written (atomically, under an exclusive lock, so concurrent drivers on one
//! results directory merge rather than overwrite) before each `sbatch` (state `submitting`, with
//! the batch token the job's comment will carry) and after it (the job id). A driver that starts
//! reads it to adopt jobs an earlier driver left queued or running. It is never the proof that a
//! stage finished: only the published cache entry is.

use crate::plan::StageKind;
use crate::util::fsx::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Written just before `sbatch`: the job may or may not exist (look for `token`).
    Submitting,
    /// In Slurm's queue (pending or running) when last seen.
    Queued,
    /// Ended (the cache says whether it published).
    Ended,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `ID` or `ID_TASK`; none while submitting.
    pub job: Option<String>,
    pub kind: StageKind,
    /// The comment its submission carried (a single stage's key, or an array's batch token).
    pub token: String,
    /// Its task in that submission (an array's index; 0 for a single job).
    pub index: usize,
    /// The run (job name) that submitted it.
    pub run: String,
    /// 1 for the first job of this key, then counting resubmissions over every run.
    pub attempt: u32,
    pub state: JobState,
    /// Where the stage's output goes, and where it writes its outcome.
    pub log: PathBuf,
    pub outcome: PathBuf,
    /// Slurm's last word on it (`TIMEOUT`, `OUT_OF_MEMORY`, …), once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_state: Option<String>,
}

pub type Entries = BTreeMap<String, Entry>;

pub struct Ledger {
    path: PathBuf,
    lock: PathBuf,
}

impl Ledger {
    /// The ledger of the results directory `results_dir`.
    pub fn new(results_dir: &Path) -> Self {
        let dir = results_dir.join("slurm");
        Ledger {
            path: dir.join("ledger.json"),
            lock: dir.join("ledger.lock"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything in it (empty when there is no ledger yet).
    pub fn read(&self) -> io::Result<Entries> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a ledger: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Entries::new()),
            Err(e) => Err(e),
        }
    }

    /// Applies `change` to the current contents under the lock and writes the result
    /// atomically.
    pub fn update<T>(&self, change: impl FnOnce(&mut Entries) -> T) -> io::Result<T> {
        let _held = self.hold()?;
        let mut entries = self.read()?;
        let out = change(&mut entries);
        let bytes = serde_json::to_vec(&entries).expect("ledger serialises");
        write_atomic(&self.path, &bytes)?;
        Ok(out)
    }

    fn hold(&self) -> io::Result<File> {
        std::fs::create_dir_all(self.lock.parent().expect("inside the results directory"))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)?;
        file.lock()?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(job: Option<&str>, state: JobState) -> Entry {
        Entry {
            job: job.map(str::to_string),
            kind: StageKind::Prune,
            token: "run.1".into(),
            index: 0,
            run: "run".into(),
            attempt: 1,
            state,
            log: "/r/log".into(),
            outcome: "/r/outcome".into(),
            slurm_state: None,
        }
    }

    #[test]
    fn updates_merge_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ledger::new(dir.path());
        assert!(a.read().unwrap().is_empty());
        a.update(|e| e.insert("k1".into(), entry(None, JobState::Submitting)))
            .unwrap();
        // A second driver's view of the same file.
        let b = Ledger::new(dir.path());
        b.update(|e| e.insert("k2".into(), entry(Some("7_1"), JobState::Queued)))
            .unwrap();
        a.update(|e| {
            let k1 = e.get_mut("k1").unwrap();
            k1.job = Some("7_0".into());
            k1.state = JobState::Queued;
        })
        .unwrap();
        let all = Ledger::new(dir.path()).read().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["k1"].job.as_deref(), Some("7_0"));
        assert_eq!(all["k2"].state, JobState::Queued);
    }

    #[test]
    fn a_damaged_ledger_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path());
        std::fs::create_dir_all(l.path().parent().unwrap()).unwrap();
        std::fs::write(l.path(), b"{not json").unwrap();
        let e = l.read().unwrap_err();
        assert!(e.to_string().contains("ledger.json"), "{e}");
    }
}
