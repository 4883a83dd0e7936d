//! The `storefront` binary (skeleton until the proxy issue lands).
fn main() {
    println!("storefront: the proxy runtime is not built yet (see the proxy issue)");
}
