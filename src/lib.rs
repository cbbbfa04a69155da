//! berth: several OCI container registries ("instances") in one process.
//!
//! Layers, each calling only the one below it:
//!
//! - [`config`]: `berth.toml` + `instances/*.toml` -> validated [`config::Config`].
//! - [`server`]: listeners, `Host` -> instance routing, graceful shutdown;
//!   composes one [`server::Instance`] (registry + auth) per configured registry.
//!   `berth serve` and the in-process tests start the same
//!   [`server::Server`], on listeners they bound ([`server::Listeners`]).
//! - [`api`]: the OCI Distribution HTTP API; thin handlers over [`registry`].
//! - [`auth`]: htpasswd (bcrypt) with a verified-credential cache.
//! - [`registry`]: repositories, blobs, uploads, manifests, tags, referrers;
//!   knows nothing of HTTP.
//! - [`oci`]: names, digests, media types and error codes shared by all layers.
//! - [`storage`]: the on-disk layout of CNCF Distribution's filesystem driver.
//! - [`coord`]: the locks between garbage collection and writers, in this
//!   process or, for several processes sharing one store, in PostgreSQL.
//!
//! Error policy: library layers return typed errors (`thiserror`); `anyhow`
//! is used only at the edges (`main`, command implementations).

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod coord;
#[doc(hidden)]
pub mod fuzzing;
pub mod oci;
pub mod registry;
pub mod server;
pub mod storage;
