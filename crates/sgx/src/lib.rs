//! SGX enclave measurement (MRENCLAVE), SIGSTRUCT, MRSIGNER and Gramine manifests, computed without SGX hardware. Pure: no I/O.
