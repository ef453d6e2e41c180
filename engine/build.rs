// Presets are embedded from ../presets and migrations from migrations/; rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=../presets");
    // The store's PostgreSQL migrations are embedded too.
    println!("cargo:rerun-if-changed=migrations");
}
