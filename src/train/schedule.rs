//! Learning-rate schedules of the reference trainers. Both warm up linearly and then follow a
//! half cosine; they differ in units (steps vs fractional epochs), in the warm-up's first value
//! and in the floor, each as its reference has it.

/// Learning rate at `step` (0-based): linear warm-up to `peak`, then cosine decay to 0
/// (task_vectors' `cosine_lr`).
pub fn steps_warmup_cosine(step: u64, steps: u64, warmup: u64, peak: f64) -> f64 {
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else {
        let span = (steps - warmup).max(1) as f64;
        let e = (step - warmup) as f64;
        0.5 * (1.0 + (std::f64::consts::PI * e / span).cos()) * peak
    }
}

/// Learning rate at fractional epoch `e`: constant, or MAE's linear warm-up then half-cycle
/// cosine to `min_lr` (SLS's `lr_sched.adjust_learning_rate`, per iteration).
pub fn epochs_warmup_cosine(
    e: f64,
    epochs: f64,
    lr: f64,
    min_lr: f64,
    warmup: f64,
    cosine: bool,
) -> f64 {
    if !cosine {
        lr
    } else if e < warmup {
        lr * e / warmup
    } else {
        let span = (epochs - warmup).max(1e-9);
        min_lr + (lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * (e - warmup) / span).cos())
    }
}

/// UPop's retraining schedule (spec structured-and-analysis.md §4.5, the reference's
/// `cosine_lr_schedule`): `(lr − min_lr)·½(1 + cos(π·epoch/epochs)) + min_lr`, set at the start of
/// each (0-based) epoch.
pub fn per_epoch_cosine(epoch: usize, epochs: usize, lr: f64, min_lr: f64) -> f64 {
    let x = std::f64::consts::PI * epoch as f64 / epochs.max(1) as f64;
    (lr - min_lr) * 0.5 * (1.0 + x.cos()) + min_lr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        assert!((steps_warmup_cosine(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((steps_warmup_cosine(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((steps_warmup_cosine(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((steps_warmup_cosine(55, 100, 10, 1.0) - 0.5).abs() < 1e-12);
        assert!(steps_warmup_cosine(99, 100, 10, 1.0) < 0.001);
        assert!((steps_warmup_cosine(0, 10, 0, 2.0) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn per_epoch_cosine_starts_at_lr_and_halves_midway() {
        assert_eq!(per_epoch_cosine(0, 12, 1e-5, 0.0), 1e-5);
        assert!((per_epoch_cosine(6, 12, 1e-5, 0.0) - 5e-6).abs() < 1e-18);
        assert!(
            (per_epoch_cosine(11, 12, 1e-5, 0.0)
                - 1e-5 * 0.5 * (1.0 + (std::f64::consts::PI * 11.0 / 12.0).cos()))
            .abs()
                < 1e-18
        );
        assert!(
            (per_epoch_cosine(3, 4, 2.0, 1.0)
                - (1.0 + 0.5 * (1.0 + (0.75 * std::f64::consts::PI).cos())))
            .abs()
                < 1e-12
        );
    }

    #[test]
    fn constant_or_warmup_then_cosine() {
        assert_eq!(
            epochs_warmup_cosine(3.5, 100.0, 1e-3, 1e-5, 10.0, false),
            1e-3
        );
        assert!((epochs_warmup_cosine(5.0, 100.0, 1e-3, 1e-5, 10.0, true) - 5e-4).abs() < 1e-15);
        assert!((epochs_warmup_cosine(10.0, 100.0, 1e-3, 1e-5, 10.0, true) - 1e-3).abs() < 1e-15);
        let mid = epochs_warmup_cosine(55.0, 100.0, 1e-3, 1e-5, 10.0, true);
        assert!((mid - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-15);
        assert!((epochs_warmup_cosine(100.0, 100.0, 1e-3, 1e-5, 10.0, true) - 1e-5).abs() < 1e-15);
    }
}
