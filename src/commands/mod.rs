//! The CLI subcommands as library functions (orchestration: anyhow errors with context).
//! `src/main.rs` parses arguments and calls these.

pub mod bench;
pub mod bench_train;
pub mod eval;
pub mod export;
pub mod fewshot;
pub mod predict;
pub mod samples;
pub mod train;
pub mod validate;
pub mod watch;
