//! Gives libcellshm.so a soname, so programs linked against it record `libcellshm.so`
//! (found through their rpath or the loader path), not the path it was built at.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcellshm.so");
}
