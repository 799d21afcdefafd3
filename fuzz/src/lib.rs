//! What each fuzz target checks, as plain functions of the input bytes, so
//! that the targets stay one line and the same checks can run on a corpus
//! without libFuzzer. Each function panics (a libFuzzer crash) when a
//! property breaks, not only when the code under test panics.

pub mod control;
pub mod header;
pub mod view;
