//! The integration tests, in one binary (built and linked once): each
//! module is the tests of one subject, against the real server over
//! sockets and the real clients and servers it meets; `common`,
//! `common_api` and `clients` are the harness they share.

mod clients;
mod common;
mod common_api;

mod access;
mod access_clients;
mod access_log;
mod api_auth;
mod api_discovery;
mod api_manifests;
mod api_pull;
mod api_push;
mod bench_smoke;
mod config_check;
mod coord;
mod crash;
mod ctl;
mod fsck;
mod full_disk;
mod fuzz_corpus;
mod gc;
mod gc_clients;
mod gc_races;
mod hostile;
mod import_registry2;
mod in_process;
mod instance_knobs;
mod interop;
mod keepalive;
mod large_blob;
mod load;
mod mirror;
mod mirror_clients;
mod observability;
mod real_clients;
mod reload;
mod request_id;
mod s3;
mod s3_cache;
mod s3_clients;
mod s3_harness;
mod tls;
mod tls_docker;
mod two_processes;
mod ui;
mod ui_browser;
mod usage;
mod webhooks;
