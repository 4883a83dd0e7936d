//! The `s3-mock` binary (skeleton until the s3-mock issue lands).
fn main() {
    println!("s3-mock: not built yet (see the s3-mock issue)");
}
