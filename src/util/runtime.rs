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

/// Loads libtorch's CUDA backend, once: the linker drops `libtorch_cuda.so` from the binary
/// (nothing references it by symbol), and without it libtorch reports no CUDA device. It is
/// loaded on demand, and only where the NVIDIA driver is, so CPU-only runs never pay for it: first from the libtorch the binary was
/// built against, then by name (`LD_LIBRARY_PATH`, e.g. a GPU machine's own PyTorch). Returns
/// whether it is loaded; a CPU-only libtorch has none.
pub fn load_cuda() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        // Without the NVIDIA kernel driver there is no device to find (and no load to pay for).
        if !std::path::Path::new("/proc/driver/nvidia").exists() {
            return false;
        }
        let built =
            option_env!("ORCHESTRATE_LIBTORCH_LIB").map(|dir| format!("{dir}/libtorch_cuda.so"));
        built
            .into_iter()
            .chain(std::iter::once("libtorch_cuda.so".to_string()))
            .any(|path| {
                let Ok(c) = std::ffi::CString::new(path) else {
                    return false;
                };
                // SAFETY: dlopen with a valid C string; the handle is kept for the process.
                !unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) }.is_null()
            })
    })
}

/// This machine's host name (`unknown` if the system will not say).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
