//! Run-time search path for the prebuilt `libduckdb.so`.
//!
//! duckdb-rs links against the library in `DUCKDB_LIB_DIR` (set by `.cargo/config.toml`)
//! but the dynamic loader does not look there, so test and dev binaries would fail to
//! start. Two rpaths fix that without `LD_LIBRARY_PATH`: the absolute build-time
//! directory (dev and tests) and `$ORIGIN/../lib` (installed as `bin/lake` next to
//! `lib/libduckdb.so`). `lake/build.rs` does the same for the lake's binaries: a build
//! script's link arguments reach only its own package.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    // Unset with the `bundled` feature: DuckDB is linked statically, no rpath needed.
    if let Some(dir) = std::env::var_os("DUCKDB_LIB_DIR") {
        let dir = PathBuf::from(dir);
        let abs = if dir.is_absolute() {
            Some(dir)
        } else {
            // cargo's `relative = true` already makes it absolute; this covers a plain env var.
            std::env::current_dir().ok().map(|cwd| cwd.join(dir))
        };
        if let Some(abs) = abs {
            let abs = abs.canonicalize().unwrap_or(abs);
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", abs.display());
        }
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib");
}
