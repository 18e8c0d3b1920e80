//! Intel PCS / PCCS v4 collateral client with a local cache.
