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
//!             │ state::writer (group commit) → state::Store (verified view)  │
//!             │   state::head (sealed head: digest, chains) → redb | etcd    │
//!             │                               ▲ state key: seal / recovery   │
//!             └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! ## Endpoints (`/api/v1`)
//! `GET status`, `GET quote?nonce=HEX[&state=1]`, `GET|POST manifest`, `POST manifest/update`,
//! `GET manifest/history`, `POST activate`, `GET|PUT secrets`, `GET audit`,
//! `GET|POST recover`, `GET openapi.json`, and `GET /metrics`. The OpenAPI document
//! (`src/openapi.json`) is checked against [`crate::api::ROUTES`] by a test.
//!
//! ## Activation
//! 1. the caller's address has not caused too many refusals without verified evidence
//!    ([`crate::refusals`]), else `rate_limited` at once;
//! 2. protocol version in `MIN..=MAX` ([`coffer_api::protocol_version_supported`]);
//! 3. a manifest is set (else `conflict`, which launchers retry) and names the workload
//!    (else `not_found`);
//! 4. the CSR parses, its self-signature verifies and its key is P-256;
//! 5. the quote verifies ([`coffer_evidence::Verifier`], collateral cached; on the blocking
//!    pool) under the pinned anchors: Intel's root, or the simulated platform's root only with
//!    `--simulation`;
//! 6. report data equals [`coffer_api::workload_report_data_for_image`] of the CSR's SPKI and
//!    the request's `image_measurement` ([`coffer_api::workload_report_data`] without one), so
//!    evidence replayed with another key, or claiming another image, is refused. Refusals up
//!    to here prove nothing about the sender and are counted and summarised, not audited one
//!    by one;
//! 7. the manifest's policy ([`coffer_manifest::Manifest::match_workload`]): TEE kind, debug,
//!    MRENCLAVE or MRSIGNER+ISVPRODID+min ISVSVN, TDX registers, the pinned image
//!    measurement, accepted TCB statuses;
//! 8. `max_activations` counts distinct instance UUIDs, decided in the single writer so two
//!    concurrent activations cannot both take the last slot; a known UUID is a restart and
//!    gets its stored per-instance secrets (and any the manifest added since, generated now);
//! 9. the intermediate CA signs the CSR (`--cert-hours` lifetime); parameters are rendered and
//!    sealed to the CSR's key ([`coffer_api::sealed`]): a replayed request gets an answer only
//!    the TEE's own key opens;
//! 10. the decision is in the audit log, committed before the answer; metrics count it by
//!     workload and reason kind.
//!
//! ## Confidential VMs: what the evidence proves
//! In an SGX enclave the evidence measures the enclave, which is the app and its files.
//! In a TD (or an SEV-SNP guest) it measures the firmware (MRTD), the boot chain (RTMR0..2:
//! TD configuration, kernel, initrd, command line) and whatever the guest extends later, but
//! not the container: Kata pulls and runs images inside the guest after boot. So:
//! - a TDX package must pin the boot (RTMR0..2, or MRCONFIGID), not only MRTD; validation
//!   refuses a firmware-only package;
//! - the launcher binds the image measurement it checked (every file of the converted image,
//!   its config) into report data bytes 32..64, domain-separated
//!   ([`coffer_api::IMAGE_BINDING_DOMAIN`]), and a package pins it with `image_measurement`.
//!
//! What that proves, and what it cannot: report data is chosen by whichever process in the
//! guest asks the TDX module (or the SNP firmware) for a report. Coffer's launcher asks only
//! after checking the image, but inside a VM it is one process among several: another
//! process in the same guest could request a report naming any image. The binding is only as
//! strong as the guest's policy that keeps other code out: the kernel and initrd (pinned by
//! RTMR1..2), and the Kata agent policy or initdata that decides which containers, commands
//! and mounts the agent accepts (CoCo and Contrast measure it into MRCONFIGID or HOST_DATA,
//! which the package can pin). A package that pins the boot, the agent policy and the image
//! admits exactly: this guest OS, running only what this policy allows, with this image.
//! Without MRCONFIGID (or an equivalent measured policy) the host's Kata agent requests can
//! start other processes in the guest, and one of them could ask for a report naming the
//! pinned image: pin it wherever the runtime measures the policy.
//!
//! ## State: authenticated as a whole
//! Every value is AES-256-GCM under a random state key with AAD = table ‖ name
//! ([`crate::state::value`]), so a value moved to another name fails. What binds the values
//! *together* is the sealed state head ([`crate::state::head`]): a generation counter, the
//! count and keyed set digest (MSet-XOR-Hash over HMACs of every sealed value) of all `kv`
//! values, the audit chain's head and the manifest history's head. Every commit writes the
//! next head, computed from the last *verified* head, in the same transaction as its values.
//! - **Open** (start-up, recovery, key join): the whole store is checked against its head;
//!   a missing, extra, swapped or older value, a missing or unreadable head, a dropped or
//!   edited audit record, a manifest that is not the one the history ends with, or a missing
//!   manifest once one was set, is **tampering**.
//! - **Serving, embedded store**: values are read from the copy verified at open and kept by
//!   the store's own commits; the host's later edits of the file are never read (redb follows
//!   its own root), and are found at the next open; audit records are read from the file and
//!   each page is checked against the chain and the head.
//! - **Serving, etcd**: every watch answer (whole revisions) is folded into the set digest and
//!   must arrive with a head that matches it, is newer than the last verified one and extends
//!   the audit chain; a re-sync is checked in full against the last verified generation.
//!   Reads see either the verified state or an error, never an unverified value.
//! - **On tampering** the Coordinator serves nothing of the state (status `tampered` with the
//!   findings, every other request `503 tampered`), counts it
//!   (`coffer_coordinator_tamper_detected_total`, `coffer_coordinator_tampered`), logs it, and
//!   appends an audit record to the chain of the last verified head (the values stay as
//!   found, so the state stays tampered). It never falls back to "awaiting manifest". Only
//!   the recovery-key holders can lead out (`coffer recover --reauthenticate`): values that fail
//!   authentication are dropped, the audit chain's breaks are acknowledged in a
//!   `state-reauthenticated` record, and if the manifest itself is gone the history records it
//!   as cleared and secrets and instances are reset, so that whoever sets the next first
//!   manifest cannot reach them.
//!
//! Durability: redb commits are durable and atomic (`Durability::Immediate`) and the API
//! answers only after the commit, so `kill -9` loses nothing acknowledged. The state key is
//! sealed (simulation: 0600 key file; SGX: MRENCLAVE sealing key from Gramine's
//! `/dev/attestation/keys/_sgx_mrenclave` + HKDF) and encrypted to every recovery key
//! (RSA-OAEP-SHA256; threshold 1 = any key, n = all keys as XOR shares, 1 < k < n = Shamir
//! shares over GF(256)).
//!
//! ## Several replicas (`--store etcd`)
//! The same sealed values live in etcd ([`crate::state::etcd`]); each replica reads from a
//! watched, verified mirror and writes through its writer as one etcd transaction per batch,
//! guarded by the state head's revision the batch was decided on (every commit writes a new
//! head, so any other replica's commit in between fails the guard); a job's own guards (the
//! manifest and CA revisions its request was decided on, an instance's absence) are checked on
//! that same state. A failed guard makes the writer refresh and decide again; a request
//! decided on a manifest another replica has since replaced is refused with `conflict`
//! (activations are re-decided on the new one). Only the leader (etcd lease,
//! [`crate::state::etcd::LEADER_TTL_SECS`]) creates a new state. Each replica seals its own
//! copy of the state key (`meta/sealed/<replica>`); a replica that can open none gets the key
//! by an attested key join ([`crate::keyjoin`]) from a replica with the same measurement and
//! an accepted TCB status (`--accept-tcb-status`, default `UpToDate`, never `Revoked`).
//!
//! ## RA-TLS and what clients pin
//! The TLS server certificate is signed by the root CA directly and carries the Coordinator's
//! quote in the TCG DICE tagged-evidence extension [`crate::pki::DICE_EVIDENCE_OID`] (report
//! data = SHA-256 of CBOR claims naming the certificate's SPKI hash, as Gramine ≥ 1.8 writes
//! it), plus [`crate::pki::SIMULATION_MARKER_OID`] in simulation. Readers accept Gramine's
//! legacy extension `1.2.840.113741.1337.6` in both its OID encodings too.
//! Clients that hold only the root (`--root-ca`, launchers' `COFFER_ROOT_CA`) accept only that
//! certificate: root-signed *and* carrying a quote over its own key
//! ([`coffer_evidence::ratls::check_coordinator_leaf`]); a workload certificate (intermediate-
//! signed) or the webhook's (no quote) is refused even if it carried the Coordinator's name,
//! which manifests may not give ([`coffer_manifest::RESERVED_NAMES`]). Clients that attest
//! (`coffer verify`) use a fresh nonce, `GET /api/v1/quote?nonce=&state=1` binds the root CA,
//! the nonce and the state head, and the quote inside the TLS certificate is verified too.
//!
//! ## Threat model
//! The host (OS, hypervisor, container runtime, Kubernetes and its operators, the disk, etcd,
//! the network, the clock of everything outside the TEE) is the adversary.
//!
//! | the host can | what happens |
//! |---|---|
//! | read the store or etcd | ciphertext only; the head is sealed too |
//! | delete, add, swap or edit a value; put back an older one | detected at open, and (etcd) at once while running; embedded: never read while running |
//! | drop, reorder or edit audit records | detected (hash chain ending in the head) |
//! | put back an older manifest, or delete it to reopen `manifest set` | detected; no path leads back to an unset manifest except the recovery-key holders' |
//! | roll back the *whole* store to an older consistent copy | not detectable by the Coordinator (no trusted monotonic counter on this platform); detected by every client that verified a newer state: `coffer verify` remembers the head and refuses a history that does not extend it, or a generation or audit head that went backwards. A rollback before any client has seen the newer state is still possible |
//! | roll back etcd under running replicas | detected: a replica never goes below a generation it verified |
//! | replay a captured activation request | it gets an answer sealed to the CSR key; nothing readable |
//! | flood refused activations | counted, summarised, limited per address; nothing per request stored |
//! | set env, args, volumes in the pod spec | the launcher passes only host variables the manifest names (`parameters.host_env`); its own settings are measured |
//! | be the first to reach a new Coordinator | sets the first manifest, unless `--owner-cert` pins the owner; it can never reach an earlier owner's secrets (the state is authenticated) |
//! | serve a certificate under the Coordinator's root | refused unless it is the Coordinator's own RA-TLS certificate |
//! | run the Coordinator on an out-of-date or revoked platform | clients and replicas require an accepted TCB status, never `Revoked` |
//!
//! It cannot read TEE memory or forge TEE evidence. **Users** authenticate by client
//! certificate matched exactly (DER, or the same SPKI) to the manifest; roles decide
//! (`packages: update` only raises minimum SVNs). **Simulation** protects nothing: it is an
//! explicit flag, shown in status, logs, metrics (`coffer_coordinator_simulation 1`) and the
//! TLS certificate, and refused by clients unless they opt in. **Errors** to clients never
//! carry secrets or internal details; `Debug` of secret-bearing types is redacted.
