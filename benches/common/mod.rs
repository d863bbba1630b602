//! Helpers the benchmark binaries share.

/// This process's peak resident set size, in MiB.
#[allow(dead_code)]
pub fn peak_rss_mib() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

/// The head of a manifest over simulated models `m0…` and synthetic datasets `d0…` (with
/// 2, 3, … classes): what the orchestration benchmarks plan and run.
#[allow(dead_code)]
pub fn simulated_models_and_datasets(name: &str, models: usize, datasets: usize) -> String {
    let mut s = format!("[experiment]\nname = \"{name}\"\n");
    for m in 0..models {
        s += &format!("[models.m{m}]\ntest = true\n");
    }
    for d in 0..datasets {
        s += &format!(
            "[datasets.d{d}]\nkind = \"synthetic\"\nclasses = {}\n",
            2 + d
        );
    }
    s
}
