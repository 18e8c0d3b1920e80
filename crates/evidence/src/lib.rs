//! TEE evidence parsing and verification: SGX/TDX DCAP quotes, Intel PCS collateral, TCB status, simulated platform. Pure: no I/O.
