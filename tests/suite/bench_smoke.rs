//! Smoke run of the benchmark (bench/): every workload at `--quick` sizes
//! against this build of berth and the reference registry
//! (`/usr/bin/docker-registry`), on disk, on a Garage bucket (which
//! `./ctl test` installs, as for tests/suite/s3.rs) and over TLS (berth's
//! own against Caddy in front of the reference), results written to a
//! temporary directory. It checks that every row of the report has numbers
//! for both servers (the rows of berth's web UI: for berth alone; the
//! mirror's: for berth mirroring the reference and the same pull without
//! it; those of the metrics workload: berth with and without its admin
//! listener); it asserts nothing about speed.

/// The metric keys of the report, one per row.
const ROWS: [&str; 50] = [
    "push_mono",
    "push_stream",
    "push_conc",
    "pull",
    "pull_conc",
    "manifest_rps",
    "manifest_p50",
    "manifest_p99",
    "tags_rps",
    "catalog_rps",
    "ui_home_p50",
    "ui_home_p99",
    "ui_tags_p50",
    "ui_tags_p99",
    "ui_pushed_p50",
    "ui_pushed_p99",
    "rss_idle",
    "rss_push_stream",
    "rss_push_conc",
    "rss_pull",
    "rss_after",
    "vmhwm",
    "mirror_pull_cached",
    "mirror_pull_cold",
    "mirror_pull_cold_1g",
    "mirror_pull_cold_5g",
    "mirror_rss_cold",
    "s3_push_mono",
    "s3_push_conc",
    "s3_pull_first",
    "s3_pull",
    "s3_rss_push_conc",
    "s3_rss_pull",
    "tls_push_mono",
    "tls_push_stream",
    "tls_push_conc",
    "tls_pull",
    "tls_pull_conc",
    "tls_manifest_rps",
    "tls_manifest_p50",
    "tls_manifest_p99",
    "tls_h2_pull",
    "tls_h2_manifest_rps",
    "tls_h2_manifest_p50",
    "tls_h2_manifest_p99",
    "metrics_scrape_p50",
    "metrics_scrape_p99",
    "metrics_manifest_rps",
    "metrics_manifest_p99",
    "metrics_push_mono",
];

#[test]
fn quick_benchmark_reports_every_workload() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let args = [
        "--quick".to_string(),
        "--duration".into(),
        "0.2".into(),
        "--berth".into(),
        env!("CARGO_BIN_EXE_berth").into(),
        "--data-dir".into(),
        path(data.path()),
        "--out".into(),
        path(out.path()),
    ];
    berth_bench::run(args).expect("the benchmark runs");

    let json = std::fs::read(out.path().join("quick.json")).expect("results written to --out");
    let report: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(report["settings"]["quick"], true);
    let metrics = report["metrics"].as_array().expect("metrics");
    let keys: Vec<&str> = metrics.iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ROWS, "one row per workload metric, in order");
    for m in metrics {
        let key = m["key"].as_str().unwrap();
        // The servers compared: berth and the reference, the mirror and
        // berth pulling directly, berth with and without its admin
        // listener.
        let servers = if key.starts_with("metrics_") {
            ["admin on", "admin off"]
        } else if key.starts_with("mirror_") {
            ["mirror", "direct"]
        } else {
            ["berth", "reference"]
        };
        // Rows of one server: berth's web UI (the reference has none), the
        // mirror's memory, the scrapes of the admin listener.
        let one_only =
            key.starts_with("ui_") || key == "mirror_rss_cold" || key.starts_with("metrics_scrape");
        let (measured, absent) = match one_only {
            true => (vec![servers[0]], vec![servers[1], "ratio"]),
            false => (vec![servers[0], servers[1], "ratio"], vec![]),
        };
        for server in measured {
            let v = m[server].as_f64();
            assert!(
                v.is_some_and(|v| v.is_finite() && v > 0.0),
                "{key}: {server} is {}",
                m[server]
            );
        }
        for &server in &absent {
            assert!(m[server].is_null(), "{key}: {server} is {}", m[server]);
        }
        for server in servers {
            let samples = m[format!("{server}_samples")].as_array().unwrap();
            assert_eq!(
                samples.is_empty(),
                absent.contains(&server),
                "{key}: {server}_samples {samples:?}"
            );
        }
    }
    assert!(report["limits"]["sha256_mbps"].as_f64().unwrap() > 0.0);
    // The data directory is removed at the end.
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}
