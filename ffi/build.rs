//! Gives libcellshm.so the soname libcellshm.so.MAJOR (cargo-c's scheme): programs linked
//! against it record that name, found through their rpath or the loader path, and a
//! release that breaks the ABI changes it, so two can be installed side by side.
fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcellshm.so.{major}");
}
