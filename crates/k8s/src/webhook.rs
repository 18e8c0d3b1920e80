//! The mutating admission webhook (being built).
