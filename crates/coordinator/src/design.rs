//! # Design of the Coordinator
//!
//! The Coordinator is Coffer's control plane. From one manifest it decides which workloads may
//! start and gives each its identity and secrets only after verifying its evidence.
//!
//! ```text
//!             ┌──────────── coffer-coordinator ────────────────────────────┐
//!  HTTPS ───▶ │ serve (tokio-rustls, hyper)  →  api::router (axum)          │
//!  (RA-TLS    │        PeerCertificate ext.        │ ApiError → JSON error   │
//!   cert)     │                                    ▼                         │
//!             │ core::Coordinator ── platform (sim | Gramine) ── evidence    │
//!             │        │  pki::Ca (root → intermediate → workload)           │
//!             │        ▼                                                     │
//!             │ writer (group commit) → store (redb, AES-256-GCM per value)  │
//!             │                               ▲ state key: seal / recovery   │
//!             └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! ## Endpoints (`/api/v1`)
//! `GET status`, `GET quote?nonce=HEX`, `GET|POST manifest`, `POST manifest/update`,
//! `POST activate`, `GET|PUT secrets`, `GET audit`, `GET|POST recover`, `GET openapi.json`,
//! and `GET /metrics`. The OpenAPI document (`src/openapi.json`) is checked against
//! [`crate::api::ROUTES`] by a test.
//!
//! ## Activation
//! 1. protocol version in `MIN..=MAX` ([`coffer_api::protocol_version_supported`]);
//! 2. a manifest is set (else `conflict`, which launchers retry) and names the workload
//!    (else `not_found`);
//! 3. the CSR parses, its self-signature verifies and its key is P-256;
//! 4. the quote verifies ([`coffer_evidence::Verifier`], collateral cached) under the pinned
//!    anchors: Intel's root, or the simulated platform's root only with `--simulation`;
//! 5. report data equals [`coffer_api::workload_report_data`] of the CSR's SPKI (so evidence
//!    replayed with another key is refused);
//! 6. the manifest's policy ([`coffer_manifest::Manifest::match_workload`]): TEE kind, debug,
//!    MRENCLAVE or MRSIGNER+ISVPRODID+min ISVSVN, TDX registers, accepted TCB statuses;
//! 7. `max_activations` counts distinct instance UUIDs, decided in the single writer so two
//!    concurrent activations cannot both take the last slot; a known UUID is a restart and
//!    gets its stored per-instance secrets;
//! 8. the intermediate CA signs the CSR (`--cert-hours` lifetime); parameters are rendered;
//! 9. the decision (accepted or refused, with the reason and the claims) is in the audit log,
//!    committed before the answer; metrics count it by workload and reason kind.
//!
//! ## State and durability
//! One redb file; every value AES-256-GCM under a random state key with AAD = table ‖ key.
//! The state key is sealed (simulation: 0600 key file; SGX: MRENCLAVE sealing key from
//! Gramine's `/dev/attestation/keys/_sgx_mrenclave` + HKDF) and encrypted to every recovery
//! key (RSA-OAEP-SHA256; threshold 1 = any key, n = all keys as XOR shares, 1 < k < n = Shamir
//! shares over GF(256)). redb commits are durable and atomic, and the API answers only after the
//! commit, so `kill -9` loses nothing acknowledged. The initial state (key check, sealed key, CA) is one transaction.
//!
//! ## Several replicas (`--store etcd`)
//! The same sealed values live in etcd ([`crate::etcd`]); each replica reads from a watched
//! local mirror and writes through its writer as one etcd transaction per batch, guarded by
//! what the batch's decisions read: instance keys absent, the workload's instance counter
//! unchanged, the manifest and CA revisions the request was decided on, the audit head. A
//! failed guard makes the writer refresh and decide again; a request decided on a manifest
//! another replica has since replaced is refused with `conflict` (activations are re-decided
//! on the new manifest). Each replica rebuilds its snapshot when the manifest or CA revision
//! in its mirror moves. Only the leader (etcd lease, [`crate::etcd::LEADER_TTL_SECS`]) creates
//! a new state. Each replica seals its own copy of the state key (`meta/sealed/<replica>`); a
//! replica that can open none gets the key by an attested key join ([`crate::keyjoin`]), and
//! keeps that join open in recovery mode.
//!
//! ## RA-TLS
//! The TLS server certificate is signed by the root CA and carries the Coordinator's quote in
//! Gramine's RA-TLS extension [`crate::pki::RATLS_QUOTE_OID`] (report data = SHA-256 of the
//! certificate's SPKI), plus [`crate::pki::SIMULATION_MARKER_OID`] in simulation. Clients that
//! want freshness use `GET /api/v1/quote?nonce=` (report data binds the root CA key and their
//! nonce) and check that the connection's certificate chains to that root ([`crate::attest`]).
//!
//! ## Threat model
//! - **Host and network are hostile.** They see ciphertext only: TLS in transit, the sealed
//!   store at rest. They can delete or roll back the store file: deletion is a denial of
//!   service; rollback to an older committed state is *not* detected (no monotonic counter
//!   on this platform) — a known limit, as in Marblerun.
//! - **Workloads** prove what they run; the Coordinator never creates their private keys.
//!   Evidence is bound to the CSR key, so a captured quote cannot be replayed with another key.
//! - **Users** authenticate by client certificate matched exactly (DER, or the same SPKI) to
//!   the manifest; roles decide. The *first* manifest can be set by anyone who reaches the
//!   Coordinator first; `coffer verify --manifest` afterwards shows which manifest is in force,
//!   so deploy and set it before exposing the port.
//! - **Simulation** protects nothing: it is an explicit flag, shown in status, logs, metrics
//!   (`coffer_coordinator_simulation 1`) and the TLS certificate, and refused by clients unless
//!   they opt in.
//! - **Errors** to clients never carry secrets or internal details (internal errors are
//!   logged, answered generically); `Debug` of secret-bearing types is redacted.
