//! The Helm chart and `coffer k8s render` (being built).
