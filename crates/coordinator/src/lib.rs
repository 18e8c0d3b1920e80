//! The Coffer Coordinator: attestation-gated secrets, PKI, sealed state, client API.
