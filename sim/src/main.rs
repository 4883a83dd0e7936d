//! The `sim` binary (skeleton until the simulation issue lands).
fn main() {
    println!("sim: not built yet (see the simulation issue)");
}
