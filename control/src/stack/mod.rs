//! Stacks: a Compose file read into typed structs (`compose.rs`) and turned
//! into Shoal's network and service specs named as Docker names them
//! (`convert.rs`). Deploying (create, update through the rolling updater,
//! prune) is the CLI's job, as in Docker: `commands/stack.rs`.

pub mod compose;
pub mod convert;
