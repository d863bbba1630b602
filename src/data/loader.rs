//! Batches produced ahead of the model: a producer thread decodes and preprocesses the next
//! batches (each in parallel with rayon) while the caller runs the model on the current one, so
//! the model is not starved by image decoding.

use super::DataError;

/// Batches ready ahead of the consumer.
const DEPTH: usize = 2;

/// Calls `make` for every chunk on a producer thread and `consume` on the results, in order.
/// Stops at the first error of either side.
pub fn pipeline<T, E, F, C>(chunks: &[Vec<usize>], make: F, mut consume: C) -> Result<(), E>
where
    T: Send,
    E: From<DataError>,
    F: Fn(&[usize]) -> Result<T, DataError> + Sync,
    C: FnMut(T) -> Result<(), E>,
{
    let (tx, rx) = crossbeam_channel::bounded::<Result<T, DataError>>(DEPTH);
    std::thread::scope(|scope| {
        let make = &make;
        scope.spawn(move || {
            for chunk in chunks {
                let item = make(chunk);
                let failed = item.is_err();
                // A closed channel means the consumer stopped; so do we.
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        // `rx` is moved in so that leaving early (an error or a panic of `consume`) drops it
        // before the scope joins the producer: a producer blocked on a full channel then sees
        // it closed instead of waiting forever.
        for item in rx {
            consume(item?)?;
        }
        Ok(())
    })
}

/// `0..n` in chunks of `size`.
pub fn chunks(indices: &[usize], size: usize) -> Vec<Vec<usize>> {
    indices.chunks(size.max(1)).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn many() -> Vec<Vec<usize>> {
        chunks(&(0..100).collect::<Vec<_>>(), 1)
    }

    #[test]
    fn a_failing_consumer_stops_the_producer() {
        let made = std::sync::atomic::AtomicUsize::new(0);
        let result: Result<(), DataError> = pipeline(
            &many(),
            |c| {
                made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(c[0])
            },
            |_| {
                Err(DataError::Invalid {
                    path: "batches".into(),
                    reason: "stop".into(),
                })
            },
        );
        assert!(result.is_err());
        assert!(made.into_inner() < 100);
    }

    #[test]
    fn a_panicking_consumer_panics_instead_of_hanging() {
        let outcome = std::panic::catch_unwind(|| {
            pipeline::<_, DataError, _, _>(&many(), |c| Ok(c[0]), |_| panic!("consumer bug"))
        });
        assert!(outcome.is_err());
    }
}
