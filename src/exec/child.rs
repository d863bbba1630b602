//! One stage in its own process: `<exe> stage <job.json>`, output to the stage's log file.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Spawns the stage process. It gets its own process group (a terminal's Ctrl-C reaches only
/// the scheduler, which decides) and is killed by the kernel if the scheduler thread dies.
pub fn spawn(
    exe: &Path,
    job: &Path,
    log: &Path,
    cuda_visible: &str,
    threads: u32,
) -> std::io::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
    cmd.arg("stage")
        .arg(job)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("CUDA_VISIBLE_DEVICES", cuda_visible)
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("RUST_BACKTRACE", "1")
        .envs(crate::util::runtime::openmp_env())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Kills a stage process group.
pub fn kill_group(pid: u32) {
    // SAFETY: sending a signal has no memory effects.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}
