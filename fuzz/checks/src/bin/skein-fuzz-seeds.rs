//! Writes each fuzz target's seed inputs ([`skein_fuzz_checks::seeds`]) into `DIR/<target>/seed-<n>`, the
//! cargo-fuzz corpus layout: `skein-fuzz-seeds fuzz/corpus`.

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: skein-fuzz-seeds DIR");
        std::process::exit(2);
    };
    for (n, (target, input)) in skein_fuzz_checks::seeds().into_iter().enumerate() {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)?;
        std::fs::write(target_dir.join(format!("seed-{n}")), input)?;
    }
    Ok(())
}
