//! OCI image reading, writing and conversion into confidential images; trusted-file measurement and file encryption.
