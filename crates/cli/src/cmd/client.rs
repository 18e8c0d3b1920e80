//! Client commands that talk to a running Coordinator: `coffer verify`, `coffer status`,
//! `coffer secret …`, `coffer recover`.
