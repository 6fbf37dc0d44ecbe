//! `skein-crdgen`: writes the CRD YAML. With no argument it prints to stdout; with a directory it writes
//! `<dir>/tracingpipelines.skein.dev.yaml`.

fn main() -> anyhow::Result<()> {
    let yaml = skein_operator::crdgen::crd_yaml()?;
    match std::env::args_os().nth(1) {
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(skein_operator::crdgen::CRD_FILE);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&path, yaml)?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{yaml}"),
    }
    Ok(())
}
