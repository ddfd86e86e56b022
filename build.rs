//! Build script: rebuild when migrations or the web build change (both are embedded) and record the
//! smartcore version from Cargo.lock, which model cards carry because artifacts are tied to it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=Cargo.lock");
    // The web pages embedded by `http::assets` (built by `make web`); new hashed file names must
    // re-embed, which a change inside the folder triggers.
    println!("cargo:rerun-if-changed=web/dist");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let version = lock
        .split("[[package]]")
        .find(|block| block.contains("name = \"smartcore\""))
        .and_then(|block| block.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map_or_else(|| "unknown".to_owned(), |v| v.trim_end_matches('"').to_owned());
    println!("cargo:rustc-env=SMARTCORE_VERSION={version}");
}
