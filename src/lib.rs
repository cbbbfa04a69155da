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
//! - [`ui`]: the web UI (everything outside `/v2/`), a sibling of [`api`]:
//!   server-rendered pages and forms over [`registry`].
//! - [`auth`]: htpasswd (bcrypt) with a verified-credential cache, access
//!   rules, the UI's sessions.
//! - [`registry`]: repositories, blobs, uploads, manifests, tags, referrers,
//!   and for mirror instances what is not stored yet, fetched through
//!   [`upstream`]; knows nothing of HTTP serving.
//! - [`upstream`]: the client side of the distribution protocol (token flow,
//!   Basic) for mirror instances: a source of content beside the store.
//! - [`notify`]: webhooks, delivered from a queue on disk per endpoint.
//! - [`audit`]: the audit log, one line per delete (by a user, retention
//!   or garbage collection).
//! - [`oci`]: names, digests, media types and error codes shared by all layers.
//! - [`storage`]: the driver trait ([`storage::driver::Driver`]) with its
//!   filesystem and in-memory drivers, CNCF Distribution's layout as keys
//!   ([`storage::keys`]), the tree read through a driver
//!   ([`storage::tree`]), the tag and catalog caches
//!   ([`storage::listing`]) and the local files a mirror's downloads are
//!   read from while they run ([`storage::spill`]). Everything the registry stores, and
//!   everything `berth fsck` reads and repairs, goes through the driver.
//! - [`coord`]: the locks between garbage collection and writers: lock
//!   files in the storage root for the processes of one host, or, with
//!   `[coordination]`, PostgreSQL advisory locks for processes anywhere.
//!
//! The path of one request: a listener accepts the connection
//! ([`server`]), the `Host` (or the dedicated listener) picks the instance,
//! [`api`] authenticates the user, parses the path once into a typed route,
//! checks the access rules and calls one method of [`registry::Registry`],
//! which works on the instance's store through the storage driver and
//! answers with a value or a [`oci::RegistryError`] that [`api`] renders as
//! OCI error JSON.
//!
//! Error policy: library layers return typed errors (`thiserror`); `anyhow`
//! is used only at the edges (`main`, command implementations).

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod coord;
#[doc(hidden)]
pub mod fuzzing;
pub mod notify;
pub mod oci;
pub mod registry;
pub mod server;
pub mod storage;
pub mod ui;
pub mod upstream;
