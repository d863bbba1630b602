//! Whether jobs on other nodes can use the results directory: what `plan` and `run` tell a user
//! before anything is submitted.

use super::cluster;
use crate::manifest::types::SlurmResources;
use std::path::Path;

/// What a user must know about the results directory before jobs on other nodes write into it:
/// that it is writable from here, and whether it is on a shared file system (a local one is
/// fine only when every node of the partition is this machine).
pub fn results_dir_warnings(results_dir: &Path, resources: &SlurmResources) -> Vec<String> {
    let mut out = Vec::new();
    let probe = results_dir.join(format!(
        ".write-probe-{}",
        crate::util::fsx::unique_suffix()
    ));
    match std::fs::create_dir_all(results_dir).and_then(|_| std::fs::write(&probe, b"")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => out.push(format!(
            "the results directory {} is not writable from here ({e}): Slurm jobs publish their entries there; choose another with --results",
            results_dir.display()
        )),
    }
    if let Some(fs) = local_file_system(results_dir) {
        let here = crate::util::runtime::hostname();
        let partition = resources.default.partition.as_deref();
        let only_here = cluster::partition_nodes(partition).is_ok_and(|nodes| {
            !nodes.is_empty() && nodes.iter().all(|n| *n == here || n == "localhost")
        });
        if !only_here {
            out.push(format!(
                "the results directory {} is on a local file system ({fs}): jobs on other nodes cannot read or publish entries there; put it on a shared file system (NFS, Lustre, GPFS, ...) with --results",
                results_dir.display()
            ));
        }
    }
    out
}

/// The name of the local (not shared) file system holding `path`, if it is one.
fn local_file_system(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statfs` writes into the zeroed struct and reads the NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // Magic numbers from statfs(2).
    match st.f_type as u64 {
        0xEF53 => Some("ext4"),
        0x5846_5342 => Some("xfs"),
        0x9123_683E => Some("btrfs"),
        0x0102_1994 => Some("tmpfs"),
        0x794C_7630 => Some("overlayfs"),
        0x2FC1_2FC1 => Some("zfs"),
        0xF2F5_2010 => Some("f2fs"),
        _ => None,
    }
}
