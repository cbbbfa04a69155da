//! Medians, ratios, targets; the console table, `results/*.json` and the
//! markdown table in `bench/README.md`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

#[derive(Clone, Copy, PartialEq)]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Agg {
    Median,
    Max,
}

/// What berth must reach for a metric.
#[derive(Clone, Copy)]
pub enum Target {
    None,
    /// berth / reference at least this.
    Ratio(f64),
    /// berth / reference at least this, and berth at least this fraction
    /// of min(sha256, fsync'd write).
    RatioAndLimit(f64, f64),
    /// berth at most this (for latencies and memory).
    AtMost(f64),
    /// berth no more than this fraction worse than the other server
    /// (a baseline build of berth).
    NotWorse(f64),
}

pub struct Metric {
    pub key: &'static str,
    pub label: String,
    pub unit: &'static str,
    pub better: Better,
    pub agg: Agg,
    pub target: Target,
    /// The two servers compared, when not berth and the other server of
    /// the run (the reference or the baseline).
    pub servers: Option<[&'static str; 2]>,
}

#[derive(Default)]
pub struct Results {
    /// Samples per metric key: [berth, the other server (reference or
    /// baseline)].
    pub samples: BTreeMap<String, [Vec<f64>; 2]>,
}

impl Results {
    pub fn add(&mut self, key: &str, server: usize, value: f64) {
        self.samples.entry(key.to_string()).or_default()[server].push(value);
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

fn aggregate(agg: Agg, v: &[f64]) -> Option<f64> {
    match agg {
        Agg::Median => median(v),
        Agg::Max => v.iter().copied().reduce(f64::max),
    }
}

pub struct Row {
    pub metric: Metric,
    pub berth: Option<f64>,
    pub reference: Option<f64>,
    pub ratio: Option<f64>,
    pub target_text: String,
    pub met: Option<bool>,
}

/// The physical limits: single-core sha256 and fsync'd sequential write, MB/s.
#[derive(Clone, Copy)]
pub struct Limits {
    pub sha256_mbps: f64,
    pub write_mbps: f64,
}

impl Limits {
    pub fn min(&self) -> f64 {
        self.sha256_mbps.min(self.write_mbps)
    }
}

pub fn rows(metrics: Vec<Metric>, results: &Results, limits: Limits) -> Vec<Row> {
    metrics
        .into_iter()
        .map(|metric| {
            let empty = [Vec::new(), Vec::new()];
            let s = results.samples.get(metric.key).unwrap_or(&empty);
            let berth = aggregate(metric.agg, &s[0]);
            let reference = aggregate(metric.agg, &s[1]);
            let ratio = match (berth, reference) {
                (Some(b), Some(r)) if r > 0.0 => Some(b / r),
                _ => None,
            };
            let other = metric.servers.map_or("ref", |[_, other]| other);
            let (target_text, met) = match metric.target {
                Target::None => (String::new(), None),
                Target::Ratio(x) => (format!("≥ {x}× {other}"), ratio.map(|r| r >= x)),
                Target::RatioAndLimit(x, frac) => {
                    let floor = frac * limits.min();
                    (
                        format!("≥ {x}× {other}, ≥ {floor:.0} {}", metric.unit),
                        match (ratio, berth) {
                            (Some(r), Some(b)) => Some(r >= x && b >= floor),
                            (None, Some(b)) => Some(b >= floor),
                            _ => None,
                        },
                    )
                }
                Target::AtMost(x) => (format!("≤ {x} {}", metric.unit), berth.map(|b| b <= x)),
                Target::NotWorse(x) => match metric.better {
                    Better::Higher => (format!("≥ {:.2}×", 1.0 - x), ratio.map(|r| r >= 1.0 - x)),
                    Better::Lower => (format!("≤ {:.2}×", 1.0 + x), ratio.map(|r| r <= 1.0 + x)),
                },
            };
            Row {
                metric,
                berth,
                reference,
                ratio,
                target_text,
                met,
            }
        })
        .collect()
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "-".into())
}

fn status(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    }
}

/// The table on the console; `names` are the two servers' names, `ratio`
/// the header of their ratio.
pub fn print_table<'a>(rows: impl IntoIterator<Item = &'a Row>, names: [&str; 2], ratio: &str) {
    let header = ["workload", "unit", names[0], names[1], ratio, "target", ""];
    let mut lines: Vec<[String; 7]> = vec![header.map(str::to_string)];
    for r in rows {
        lines.push([
            r.metric.label.clone(),
            r.metric.unit.to_string(),
            fmt(r.berth),
            fmt(r.reference),
            fmt_ratio(r.ratio),
            r.target_text.clone(),
            status(r.met).to_string(),
        ]);
    }
    let mut widths = [0usize; 7];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    println!();
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(j, (c, w))| {
                let pad = w - c.chars().count();
                if (2..5).contains(&j) {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
        if i == 0 {
            println!("{}", "-".repeat(widths.iter().sum::<usize>() + 12));
        }
    }
}

/// The markdown table of `rows`, whose columns are `names` and `ratio`
/// (as [`print_table`]'s), with the machine and `settings` above it.
pub fn markdown(
    rows: &[Row],
    limits: Limits,
    machine: &serde_json::Value,
    settings: &str,
    names: [&str; 2],
    ratio: &str,
) -> String {
    let mut s = String::new();
    let reference = match names[1] {
        "reference" => format!(
            "; reference: {}",
            machine["reference_version"].as_str().unwrap_or("?")
        ),
        _ => String::new(),
    };
    s.push_str(&format!(
        "Run of {} on: {} × {}, {} RAM, Linux {}{reference}.\n{settings}\n\n",
        machine["date"].as_str().unwrap_or("?"),
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["ram"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
    ));
    s.push_str(&format!(
        "| workload | unit | {} | {} | {ratio} | target | |\n",
        names[0], names[1]
    ));
    s.push_str("| --- | --- | ---: | ---: | ---: | --- | --- |\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.metric.label,
            r.metric.unit,
            fmt(r.berth),
            fmt(r.reference),
            fmt_ratio(r.ratio),
            r.target_text,
            status(r.met)
        ));
    }
    s.push_str(&format!(
        "\nLimits of this machine: sha256 on one core {:.0} MB/s, fsync'd sequential write {:.0} MB/s",
        limits.sha256_mbps, limits.write_mbps,
    ));
    // The floor of the targets that have one.
    let floor = rows.iter().find_map(|r| match r.metric.target {
        Target::RatioAndLimit(_, frac) => Some(frac),
        _ => None,
    });
    match floor {
        Some(frac) => s.push_str(&format!(
            " (min {:.0} MB/s; {:.0}% of it is {:.0} MB/s).\n",
            limits.min(),
            frac * 100.0,
            frac * limits.min()
        )),
        None => s.push_str(".\n"),
    }
    s
}

/// The results as JSON; each row's two values (and samples) under the
/// names `names` gives for it.
pub fn json(
    rows: &[Row],
    results: &Results,
    limits: Limits,
    machine: serde_json::Value,
    settings: serde_json::Value,
    names: impl Fn(&Row) -> [&'static str; 2],
) -> serde_json::Value {
    let metrics: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let empty = [Vec::new(), Vec::new()];
            let s = results.samples.get(r.metric.key).unwrap_or(&empty);
            let mut v = json!({
                "key": r.metric.key,
                "label": r.metric.label,
                "unit": r.metric.unit,
                "better": if r.metric.better == Better::Higher { "higher" } else { "lower" },
                "aggregate": if r.metric.agg == Agg::Median { "median" } else { "max" },
                "ratio": r.ratio,
                "target": r.target_text,
                "met": r.met,
            });
            for (i, (name, value)) in names(r).iter().zip([r.berth, r.reference]).enumerate() {
                v[*name] = json!(value);
                v[format!("{name}_samples")] = json!(s[i]);
            }
            v
        })
        .collect();
    json!({
        "machine": machine,
        "settings": settings,
        "limits": { "sha256_mbps": limits.sha256_mbps, "fsync_write_mbps": limits.write_mbps },
        "metrics": metrics,
    })
}

/// A section of `README.md` the benchmark writes: its markers' name and,
/// for a README without them, the heading it is appended under.
pub struct Section {
    pub marker: &'static str,
    pub heading: &'static str,
}

/// The results of the workloads on disk.
pub const RESULTS: Section = Section {
    marker: "results",
    heading: "Latest results",
};

/// The results of the mirror workload.
pub const MIRROR_RESULTS: Section = Section {
    marker: "mirror-results",
    heading: "Latest results of the mirror",
};

/// The results of the workloads on S3.
pub const S3_RESULTS: Section = Section {
    marker: "s3-results",
    heading: "Latest results on S3",
};

/// The results of the workloads over TLS.
pub const TLS_RESULTS: Section = Section {
    marker: "tls-results",
    heading: "Latest results over TLS",
};

/// The results of the metrics workload.
pub const METRICS_RESULTS: Section = Section {
    marker: "metrics-results",
    heading: "Latest results of the admin listener",
};

/// Replaces `section` of `README.md` (between its markers).
pub fn update_readme(path: &Path, section: &Section, table: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# berth-bench\n".to_string());
    let (start, end) = (
        format!("<!-- {}:start -->", section.marker),
        format!("<!-- {}:end -->", section.marker),
    );
    let text = format!("{start}\n{table}{end}");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{text}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n## {}\n\n{text}\n", old.trim_end(), section.heading),
    };
    std::fs::write(path, new)?;
    Ok(())
}
