//! # comps-launcher
//!
//! One way to start, watch and stop comps processes. `comps up` runs the ChatQnA pipeline
//! (scripts/chatqna.sh is a build step and this); the tests start the service binaries with
//! [`Proc`]; the benchmarks run `comps up --ready-file`.
//!
//! ```text
//! comps up                                  # OPEA's ports, data/chatqna, models/ (fetched if absent)
//! comps up --chatqna-port 0 ... --ready-file ready.json -- --without-rerank
//! comps up --restart on-failure             # a service that dies is started again
//! ```

pub mod chatqna;
pub mod proc;
pub mod supervise;

pub use proc::{LaunchError, Proc, ProcSpec, listening_addr};
