//! The kubelet device plugin API v1beta1 (being built).
