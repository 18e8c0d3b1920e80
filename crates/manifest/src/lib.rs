//! Coffer deployment manifest: types, validation with JSON paths, canonical hash, secret placeholders. Pure: no I/O.
