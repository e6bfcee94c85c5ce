//! End-to-end tests, compiled as one binary (ripgrep's layout): each module
//! drives the real `strata` executable or the public library API.

// Helpers: running the binary, reading dataset manifests.
mod util;

// `strata inspect`: output shape, exit codes and error messages.
mod inspect;

// Every model of a dataset folder against the reference values that
// independent tools computed (datasets/MANIFEST.tsv and oracle.jsonl).
mod oracle;

// `strata repair`: every broken dataset model, valid ones left alone,
// idempotence, and errors.
mod repair;

// The slicer against trimesh's sections of every watertight model.
mod slice;

// `strata slice` and `strata stream`: decoded areas against trimesh,
// damage named by chunk, atomic replacement.
mod stream;

// `strata render`: golden images, options and errors.
mod render;

// `strata ingest` and `strata models`: the catalog pipeline and the store.
mod ingest;

// Replays the fuzz corpora so crashes found once stay fixed.
mod fuzz_corpus;

// `strata serve` over real HTTP on loopback: partners, uploads, tokens,
// printer streams, print status, the legacy API, errors.
mod server;

// The wire contract of the 3DIAX and api3 clients partners run: each test
// replays the exact requests of one public client and asserts what it reads.
mod compat;

// `strata printer` against `strata serve`: pull, verify, resume after a
// kill, decode, report.
mod printer;

// Callbacks: signed, retried with back-off, logged, given up, and never
// sent to private addresses unless allowed.
mod callbacks;

// The model lifecycle under failure: kill -9 during processing, one
// process per data directory, bounded queues, checks before spooling.
mod lifecycle;

// `strata upload`: a catalog into a remote server, copies once, resumable.
mod upload;

// Backward compatibility: a v1 stream and meta.db files of every earlier
// schema.
mod compat_store;

// Logs (JSON, request spans, no secrets), metrics and readiness.
mod observe;

// The widget in headless Chromium: live status, 400x400 frame, screenshot.
mod widget;

// Scoped JWTs: minted by route and CLI, verified with the published keys.
mod jwt;

// Embedding as ShapeDiver's Geometry Backend API v2: tickets, sessions,
// origins, require_token, errors.
mod embed;

// External service providers (seed 002): registry, links, signed requests,
// temporary credentials, completion, the reference provider.
mod providers;

// ShapeDiver's own npm SDK against strata serve: the contract test.
mod sdk;

// Hardening for the open internet: headers, request destinations.
mod hardening;

// Resumable uploads (tus 1.0) through PyPI's tuspy, across a killed
// server, and every refusal of the protocol.
mod tus;

// Settings from strata.toml, the environment and flags.
mod config;

// Blobs in an S3-compatible bucket (s3s-fs inside this binary): the whole
// flow, ingest, presigned redirects, multipart writes, bad settings.
mod objstore;

// Several servers and workers over one PostgreSQL database and one bucket
// (skipped without STRATA_TEST_POSTGRES; `.ci/run` starts PostgreSQL).
mod scaleout;
