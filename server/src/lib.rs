//! # strata-server
//!
//! The warp/tokio HTTP service: partner API, print tokens, printer streams,
//! print status and auth, over the pipeline's store.
//!
//! Empty for now; the server arrives with its own issue. It depends only on
//! `strata-pipeline`, never on `strata-core` directly, so the layering stays
//! visible in the manifests.

pub use strata_pipeline as pipeline;
