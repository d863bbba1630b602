//! `orchestrate init-model DIR`: a new random CLIP model directory (see `model::create`).

use super::{CliError, exit};
use std::path::Path;

pub fn run(dir: &Path, preset: &str, seed: i64, force: bool) -> Result<i32, CliError> {
    if dir.join("config.json").exists() && !force {
        println!(
            "{} already holds a model; keeping it (--force replaces it)",
            dir.display()
        );
        return Ok(exit::OK);
    }
    let config = crate::model::create::create(dir, preset, seed)?;
    println!(
        "wrote {} ({preset}: vision {}×{} patch {} at {}px, text {}×{}, vocabulary {}, projection {})",
        dir.display(),
        config.vision.num_hidden_layers,
        config.vision.hidden_size,
        config.vision.patch_size,
        config.vision.image_size,
        config.text.num_hidden_layers,
        config.text.hidden_size,
        config.text.vocab_size,
        config.projection_dim
    );
    Ok(exit::OK)
}
