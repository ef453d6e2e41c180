// Presets are embedded from ../presets; rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=../presets");
}
