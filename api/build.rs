//! Embeds every file under `dashboard/` in the binary: clusters are often air-gapped, so the
//! dashboard fetches nothing from anywhere but the server that serves it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn files(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, found)?;
        } else {
            found.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("dashboard");
    // A directory: cargo looks at every file beneath it.
    println!("cargo:rerun-if-changed={}", root.display());
    let mut found = Vec::new();
    if root.is_dir() {
        files(&root, &mut found)?;
    }
    // Sorted, so that the binary does not depend on the order the filesystem lists files in.
    found.sort();
    let mut table = String::from("&[\n");
    for path in &found {
        let relative = path.strip_prefix(&root)?;
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        writeln!(
            table,
            "    ({:?}, include_bytes!({:?}) as &[u8]),",
            parts.join("/"),
            path.display().to_string()
        )?;
    }
    table.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("dashboard_assets.rs");
    std::fs::write(out, table)?;
    Ok(())
}
