//! Replays the fuzzing corpus (`fuzz/corpus/<target>/`) and the inputs of
//! fixed bugs (`fuzz/regressions/<target>/`) through the checks the fuzz
//! targets run, so they stay covered on stable Rust.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

#[test]
fn corpus_and_regressions_pass_their_checks() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, check) in berth::fuzzing::TARGETS {
        let corpus = files(&fuzz.join("corpus").join(target));
        assert!(!corpus.is_empty(), "no corpus for fuzz target {target}");
        for file in corpus
            .iter()
            .chain(&files(&fuzz.join("regressions").join(target)))
        {
            let data = std::fs::read(file).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{target}: {} fails its check", file.display());
            }
        }
    }
}
