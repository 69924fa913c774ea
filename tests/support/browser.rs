//! Headless Chromium for page tests: `chromedriver` started on a free loopback port and driven
//! with fantoccini. A browser that cannot start fails the test, saying what to install.
//!
//! The binaries are Debian's `chromium` and `chromium-driver` packages (`scripts/test.sh`
//! installs them); `RAG_TEST_CHROMEDRIVER` and `RAG_TEST_CHROMIUM` point elsewhere.
#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tempfile::TempDir;

/// How long chromedriver and Chromium get to start.
const START_WAIT: Duration = Duration::from_secs(30);

/// The flags Chromium starts with on these machines: headless as root, and nothing that
/// reaches for the network (a closed network refuses those connections, many at a time).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

const INSTALL: &str = "install Debian's `chromium` and `chromium-driver` packages \
    (apt-get install --no-install-recommends chromium chromium-driver; scripts/test.sh does it), \
    or set RAG_TEST_CHROMEDRIVER and RAG_TEST_CHROMIUM to a chromedriver and a Chromium of the same version";

/// A WebDriver session in headless Chromium. Call [`Browser::close`] at the end; if the test
/// panics first, dropping it still kills chromedriver and the browser.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: Driver,
}

/// The chromedriver process, killed with its process group (the browser) when dropped.
struct Driver {
    child: Child,
    log: PathBuf,
    // Chromium's profile and the log; removed after the processes are gone.
    _dir: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads its own process group, which holds the Chromium it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} not found (from {var}, default {default}): {INSTALL}",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; panics with what to install when
    /// either cannot start.
    pub async fn start() -> Browser {
        let chromedriver = binary("RAG_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("RAG_TEST_CHROMIUM", "/usr/bin/chromium");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("chromedriver.log");
        let profile = dir.path().join("profile");
        let port = free_port();
        let out = File::create(&log).expect("the chromedriver log");
        let err = out.try_clone().expect("the chromedriver log");
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "chromedriver ({}) could not start: {e}; {INSTALL}",
                chromedriver.display()
            )
        });
        let mut driver = Driver {
            child,
            log,
            _dir: dir,
        };

        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities: Capabilities = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }))
        .expect("capabilities");
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let attempt = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            let error = match attempt {
                Ok(client) => break client,
                Err(e) => e,
            };
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before a session started: {error}; {INSTALL}\n\
                     chromedriver's log:\n{}",
                    read_log(&driver.log)
                );
            }
            // Refused while chromedriver is still starting; a session error once it runs
            // means Chromium itself did not start.
            use fantoccini::error::NewSessionError as E;
            let refused = matches!(error, E::Failed(_) | E::FailedC(_) | E::Lost(_));
            if !refused || started.elapsed() > START_WAIT {
                panic!(
                    "headless Chromium ({}) did not start through chromedriver ({}): {error}; \
                     {INSTALL}\nchromedriver's log:\n{}",
                    chromium.display(),
                    chromedriver.display(),
                    read_log(&driver.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Browser { client, driver }
    }

    /// Ends the session (chromedriver closes Chromium), then stops chromedriver.
    pub async fn close(self) {
        let Browser { client, driver } = self;
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        drop(driver);
    }
}
