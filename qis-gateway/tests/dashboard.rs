//! The dashboard in a real browser: headless Chromium (Debian's `chromium`,
//! driven through Debian's `chromedriver`; `scripts/servers/chromium.sh
//! install` installs both) opens the page; packets are deposited through the
//! API; the test sees them, the synthesis (agents, agreement, alert) and a
//! consumer's backlog appear on the page without a reload, and the live list
//! stay bounded under a burst. It saves a screenshot as
//! `<target dir>/dashboard.png`.
//!
//! Without chromium or chromedriver the test is ignored with the reason;
//! with `QIS_REQUIRE_LIVE=1` it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use qis_conformance::ensure;
use qis_conformance::support::{block_on, eventually, free_port, trial, CaseResult, TempDir};
use serde_json::{json, Value};

/// The browser's flags: headless, no sandbox (CI runs as root), and nothing
/// that reaches outside this machine.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1400,1000",
];

#[derive(Clone)]
struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

fn find(program: &str, candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .collect::<Vec<_>>()
        }))
        .find(|p| p.is_file())
}

fn browser() -> Result<Browser, String> {
    let how = "install them with scripts/servers/chromium.sh install (Debian's chromium and chromium-driver)";
    Ok(Browser {
        chromium: find("chromium", &["/usr/bin/chromium"])
            .ok_or_else(|| format!("chromium is not installed: {how}"))?,
        chromedriver: find("chromedriver", &["/usr/bin/chromedriver"])
            .ok_or_else(|| format!("chromedriver is not installed: {how}"))?,
    })
}

/// chromedriver on a free loopback port.
fn chromedriver(bin: &Path) -> Result<OwnServer, String> {
    let port = free_port();
    let mut command = Command::new(bin);
    command.arg(format!("--port={port}"));
    OwnServer::start("chromedriver", command, port, Duration::from_secs(15))
}

/// Where the screenshot goes: the target directory (the parent of Cargo's
/// test temp dir), so CI keeps it as an artifact.
fn screenshot_path() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).join("dashboard.png")
}

/// Wait until `script` (a JS expression) is true on the page.
async fn until(page: &Client, what: &str, script: &str, within: Duration) -> CaseResult {
    let script = format!("return Boolean({script});");
    let shown = eventually(&format!("{what} on the page"), within, || {
        let script = script.clone();
        async move {
            page.execute(&script, vec![])
                .await
                .is_ok_and(|v| v == Value::Bool(true))
        }
    })
    .await;
    if let Err(e) = shown {
        let status = page
            .execute(
                "return document.getElementById('status').textContent;",
                vec![],
            )
            .await
            .unwrap_or(Value::Null);
        return Err(format!("{e} (the page's status: {status})"));
    }
    Ok(())
}

async fn text(page: &Client, css: &str) -> Result<String, String> {
    page.find(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("{css}: {e}"))
}

async fn dashboard_shows_the_swarm(b: Browser) -> CaseResult {
    let (g, backend) = memory_gateway(config()).await?;
    let http = client();
    let base = g.url();
    let prefix = backend.prefix().to_string();
    let driver = chromedriver(&b.chromedriver)?;
    let profile = TempDir::new("chromium-profile");
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": b.chromium, "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let page = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .map_err(|e| format!("open a chromium session through chromedriver: {e}"))?;
    let result = async {
        page.goto(&format!("{base}/"))
            .await
            .map_err(|e| format!("open the dashboard: {e}"))?;
        until(&page, "the live stream", "document.getElementById('status').textContent === 'live'", Duration::from_secs(20)).await?;
        // A mark that a reload would erase.
        page.execute("window.qisMark = 42; return true;", vec![])
            .await
            .map_err(|e| e.to_string())?;

        // A consumer with a backlog, and packets from three agents.
        let (status, body) = post(&http, format!("{base}/v1/consumers"), &json!({"name": "ops-reader", "pattern": format!("{prefix}.>")})).await?;
        ensure!(status == 201, "open a consumer: {status} {body}");
        let mut last_id = String::new();
        for (agent, problem, seq) in [
            ("hvac-building-a", "energy-anomaly", 1),
            ("hvac-building-b", "energy-anomaly", 2),
            ("hvac-building-c", "refrigerant-loss", 3),
        ] {
            let mut p = packet_json(agent, problem, seq);
            p["conclusion"] = json!(format!("{problem} seen by {agent}"));
            // Equally confident: the weighted strength is 2 of 3, above 0.6.
            p["confidence"] = json!(0.9);
            let (status, body) = post(&http, format!("{base}/v1/packets"), &p).await?;
            ensure!(status == 201, "deposit: {status} {body}");
            last_id = body["id"].as_str().unwrap_or_default().to_string();
        }
        until(&page, "the last packet in the live list", &format!("document.querySelector('#packets tr[data-id=\"{last_id}\"]')"), Duration::from_secs(10)).await?;
        until(&page, "the energy-anomaly synthesis with three agents, alerting",
            "(() => { const r = document.querySelector('#classes tr[data-class=\"hvac.energy-anomaly\"]'); return r && r.dataset.alert === 'true' && r.querySelector('td.agents').textContent === '3'; })()",
            Duration::from_secs(10)).await?;
        let agreement = text(&page, "#classes tr[data-class=\"hvac.energy-anomaly\"] td.agreement").await?;
        ensure!(agreement.contains("67%"), "agreement shown as {agreement:?}, expected 67% (2 of 3)");
        until(&page, "the consumer with its backlog",
            "(() => { const r = document.querySelector('#consumers tr[data-consumer=\"ops-reader\"] td.waiting'); return r && Number(r.textContent) >= 3; })()",
            Duration::from_secs(10)).await?;

        // A burst: 1,000 packets in batches; the live list stays bounded.
        for chunk in 0..10 {
            let packets: Vec<Value> = (0..100)
                .map(|i| json!({"packet": packet_json(&format!("burst-{}", i % 25), "energy-anomaly", 100 + chunk * 100 + i)}))
                .collect();
            let (status, body) = post(&http, format!("{base}/v1/packets/batch"), &json!({"packets": packets})).await?;
            ensure!(status == 201, "burst deposit: {status} {body}");
        }
        until(&page, "the burst counted", "Number(document.getElementById('live-count').textContent) >= 1003", Duration::from_secs(20)).await?;
        let rows = page
            .execute("return document.querySelectorAll('#packets tbody tr').length;", vec![])
            .await
            .map_err(|e| e.to_string())?;
        ensure!(rows.as_u64().is_some_and(|n| n <= 40), "the live list grew to {rows} rows");
        let mark = page.execute("return window.qisMark;", vec![]).await.map_err(|e| e.to_string())?;
        ensure!(mark == json!(42), "the page was reloaded (mark {mark})");

        let png = page.screenshot().await.map_err(|e| format!("screenshot: {e}"))?;
        let path = screenshot_path();
        std::fs::write(&path, &png).map_err(|e| format!("write {}: {e}", path.display()))?;
        eprintln!("dashboard screenshot: {}", path.display());
        Ok(())
    }
    .await;
    let _ = page.close().await;
    drop(driver);
    let _ = g.shutdown().await;
    result
}

fn main() {
    let trials = vec![trial("dashboard::shows_the_swarm_live", &browser(), |b| {
        block_on(Duration::from_secs(150), dashboard_shows_the_swarm(b))
    })];
    qis_conformance::run_trials(trials);
}
