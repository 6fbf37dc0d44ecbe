//! Replays every seed input and every saved crash (`fuzz/regressions/<target>/*`, one file per input found by
//! `scripts/fuzz.sh`) through the fuzz targets' checks: a crash fixed once stays fixed, and the checks hold on
//! valid requests of every kind.

use std::path::Path;

use skein_fuzz_checks::{TARGETS, seeds};

fn target(name: &str) -> skein_fuzz_checks::Check {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).unwrap_or_else(|| panic!("no fuzz target {name}"))
}

#[test]
fn seeds_pass_every_check() {
    let seeds = seeds();
    for (name, _) in TARGETS {
        assert!(seeds.iter().any(|(n, _)| n == name), "target {name} has no seed");
    }
    for (i, (name, input)) in seeds.iter().enumerate() {
        assert!(target(name)(input), "seed {i} of {name} was not accepted: {}", String::from_utf8_lossy(input));
    }
}

#[test]
fn saved_crashes_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&root).expect("fuzz/regressions") {
        let dir = entry.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().and_then(|n| n.to_str()).expect("target directory name").to_string();
        let check = target(&name);
        for file in std::fs::read_dir(&dir).expect("target directory") {
            let path = file.expect("entry").path();
            let input = std::fs::read(&path).expect("regression input");
            eprintln!("replaying {}", path.display());
            let _ = check(&input);
            replayed += 1;
        }
    }
    eprintln!("{replayed} saved crash inputs replayed");
}
