//! The real binary as a child process: for tests that kill it with SIGKILL or read what it prints.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `segmentd serve` child process and the address it printed.
pub struct ServerProcess {
    /// The child.
    pub child: Child,
    /// `http://ip:port` as printed by the server when ready.
    pub base_url: String,
}

impl ServerProcess {
    /// Starts `segmentd serve --demo` (without demo data) on a free port with `data_dir`, and waits for
    /// its ready line.
    pub fn start(data_dir: &Path) -> ServerProcess {
        Self::start_with_demo_profiles(data_dir, 0)
    }

    /// Starts `segmentd serve --demo --demo-profiles N`: an empty data directory gets a demo store.
    pub fn start_with_demo_profiles(data_dir: &Path, profiles: u64) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_segmentd"))
            .args([
                "serve",
                "--demo",
                "--demo-profiles",
                &profiles.to_string(),
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("segmentd starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let base_url = line
            .trim()
            .strip_prefix("segmentd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        ServerProcess { child, base_url }
    }

    /// Kills the process with SIGKILL (no chance to flush or clean up) and reaps it.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// A request with the demo client's credentials.
    pub fn demo_request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        client
            .request(method, format!("{}{}", self.base_url, path))
            .header("x-api-key", "demo")
            .header("authorization", "Bearer demo")
            .header("x-gw-ims-org-id", "demo@AdobeOrg")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
