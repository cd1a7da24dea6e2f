//! Checks of hookrelay's deployment files (see the crate docs in `src/lib.rs`).

mod broker;
mod compose;
mod definitions;
mod dockerfile;
mod support;
