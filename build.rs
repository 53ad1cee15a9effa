//! Compresses the two BPE tables exact token counting needs (o200k_base, cl100k_base)
//! into `OUT_DIR`, for `compact::tokens` to embed and expand on first use.
//!
//! `bpe-openai` embeds them as ready-to-load MessagePack: 47 MB of a 67 MB binary.
//! Gzipped they are 24 MB, and expanding them costs about as much as the loading
//! always did (tens of milliseconds, once, at start-up's warm-up). Rebuilding them
//! from the tiktoken vocabularies instead (2.5 MB) would take seconds per start.

use std::error::Error;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    for (name, tokenizer) in [("o200k_base", bpe_openai::o200k_base()), ("cl100k_base", bpe_openai::cl100k_base())] {
        let file = BufWriter::new(File::create(out.join(format!("{name}.bpe.gz")))?);
        let mut gz = GzEncoder::new(file, Compression::default());
        // The same encoding `bpe-openai` reads its own tables with.
        rmp_serde::encode::write(&mut gz, &tokenizer.bpe)?;
        gz.finish()?.flush()?;
    }
    println!("cargo::rerun-if-changed=build.rs");
    Ok(())
}
