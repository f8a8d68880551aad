//! The migrations are compiled in by `sqlx::migrate!`, which cannot tell cargo that they are
//! inputs: without this, a changed or added migration leaves a stale binary behind.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
