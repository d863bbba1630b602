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
        for item in rx.iter() {
            consume(item?)?;
        }
        Ok(())
    })
}

/// `0..n` in chunks of `size`.
pub fn chunks(indices: &[usize], size: usize) -> Vec<Vec<usize>> {
    indices.chunks(size.max(1)).map(<[usize]>::to_vec).collect()
}
