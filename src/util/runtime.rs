//! Tuning for tensor work on the CPU (measured with `make bench`, 2 cores).
//!
//! After each parallel region libtorch's OpenMP workers (GNU libgomp) spin for 300,000 rounds
//! before sleeping, tens of milliseconds here. Rayon work between tensor calls (mask selection,
//! SparseGPT's column loop, Slide-CLIP's optimiser) then shares the cores with spinning threads:
//! SparseGPT on ViT-B/32 took 33 s, 25 s with the spin capped at 10,000 rounds, and the demo's
//! Slide-CLIP prunes 8.4 s instead of 14.0 s. libgomp reads its settings once, when it is
//! loaded, so the cap goes into child processes' environment.

/// Environment for a child process that does tensor work: the OpenMP spin cap, unless the user
/// set an OpenMP wait policy of their own.
pub fn openmp_env() -> Vec<(&'static str, &'static str)> {
    let chosen = ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if chosen {
        Vec::new()
    } else {
        vec![("GOMP_SPINCOUNT", "10000")]
    }
}
