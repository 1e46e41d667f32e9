//! Link the shim as a non-PIE executable: its relocations are resolved at link time, so the
//! pages of its read-only data stay clean and shared between all shims instead of being dirtied
//! by the dynamic loader in each one (a shim runs per container: this is most of its private
//! memory after the heap).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
