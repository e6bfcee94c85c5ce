//! # strata-pipeline
//!
//! Drives `strata-core` over one model or a whole catalog: rayon for the CPU
//! stages, bounded crossbeam channels between reading, processing and writing,
//! and the model store the server shares.
//!
//! Nothing lives here yet; the catalog pipeline and the store arrive with
//! their own issue. The crate exists now so the dependency direction
//! (server -> pipeline -> core) is fixed from the first commit.

pub use strata_core as core;
