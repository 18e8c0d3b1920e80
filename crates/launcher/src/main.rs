//! `coffer-launcher`: see the `coffer_launcher` crate.
fn main() {}
