//! coffer-launcher: the premain that activates with the Coordinator, materialises secrets and execs the original entrypoint.
