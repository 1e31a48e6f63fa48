//! Starting a real server for a test and talking to it.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use reqwest::{Method, RequestBuilder, Response};
use segmentd::clock::{Clock, SystemClock};
use segmentd::config::{ClientConfig, Settings};
use segmentd::startup::Application;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An org both test clients may use.
pub const ORG_SHARED: &str = "orgShared@AdobeOrg";
/// An org only client A may use.
pub const ORG_A: &str = "orgA@AdobeOrg";

/// Client A: may act for `ORG_A` and `ORG_SHARED`.
pub fn client_a() -> ClientConfig {
    ClientConfig {
        api_key: "key-a".into(),
        token: "token-a".into(),
        orgs: vec![ORG_A.into(), ORG_SHARED.into()],
    }
}

/// Client B: may act for `ORG_SHARED` only.
pub fn client_b() -> ClientConfig {
    ClientConfig {
        api_key: "key-b".into(),
        token: "token-b".into(),
        orgs: vec![ORG_SHARED.into()],
    }
}

// Logs go to the console only with TEST_LOG=1, and the subscriber is installed once per binary.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        segmentd::telemetry::init(segmentd::config::LogFormat::Text);
    }
});

/// A running server with its own data directory.
pub struct TestApp {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// An HTTP client.
    pub http: reqwest::Client,
    data_dir: Arc<TempDir>,
    clock: Arc<dyn Clock>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// Starts a server on a fresh data directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with_clock(Arc::new(SystemClock)).await
}

/// Starts a server on a fresh data directory with an injected clock.
pub async fn spawn_app_with_clock(clock: Arc<dyn Clock>) -> TestApp {
    start(Arc::new(tempfile::tempdir().expect("temp dir")), clock).await
}

async fn start(data_dir: Arc<TempDir>, clock: Arc<dyn Clock>) -> TestApp {
    LazyLock::force(&TRACING);
    let mut settings = Settings::load(None, [], toml::Table::new()).expect("default settings");
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.data_dir = data_dir.path().to_owned();
    settings.auth.clients = vec![client_a(), client_b()];
    let application = Application::build_with_clock(settings, clock.clone())
        .await
        .expect("server builds");
    let addr = application.local_addr();
    let (shutdown, signal) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        application
            .run_until(async move {
                let _ = signal.await;
            })
            .await
            .expect("server runs");
    });
    TestApp {
        addr,
        http: reqwest::Client::new(),
        data_dir,
        clock,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Returns the absolute URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server gracefully and starts a new one on the same data directory.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        start(self.data_dir.clone(), self.clock.clone()).await
    }

    async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task ends cleanly");
        }
    }

    /// A request with no credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request as client A in `org` and `sandbox`.
    pub fn as_a(&self, method: Method, path: &str, org: &str, sandbox: &str) -> RequestBuilder {
        self.with_client(&client_a(), method, path, org, sandbox)
    }

    /// A request as client A in `ORG_A`, sandbox `prod`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.as_a(method, path, ORG_A, "prod")
    }

    /// A request with a given client's credentials.
    pub fn with_client(
        &self,
        client: &ClientConfig,
        method: Method,
        path: &str,
        org: &str,
        sandbox: &str,
    ) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("x-api-key", &client.api_key)
            .header("authorization", format!("Bearer {}", client.token))
            .header("x-gw-ims-org-id", org)
            .header("x-sandbox-name", sandbox)
    }
}

/// Reads a JSON body, panicking with the status and text if it is not JSON.
pub async fn json(response: Response) -> serde_json::Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("status {status}, non-JSON body: {text}"))
}

/// Asserts that a response is the error envelope with this status, and returns the envelope.
pub async fn assert_envelope(response: Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("x-request-id header")
        .to_str()
        .unwrap()
        .to_owned();
    let body = json(response).await;
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("https://ns.adobe.com/aep/errors/"),
        "{body}"
    );
    assert!(
        body["title"]
            .as_str()
            .is_some_and(|title| !title.is_empty()),
        "{body}"
    );
    assert_eq!(body["requestId"], request_id.as_str(), "{body}");
    let entries = body["errors"][status.to_string()]
        .as_array()
        .unwrap_or_else(|| panic!("errors[{status}] in {body}"));
    assert!(
        !entries.is_empty() && entries[0]["code"].is_string() && entries[0]["message"].is_string(),
        "{body}"
    );
    body
}

/// Asserts that `GET path` answers 404 with the error envelope (a deleted or unknown resource).
pub async fn assert_not_found(app: &TestApp, path: &str) {
    assert_envelope(app.request(Method::GET, path).send().await.unwrap(), 404).await;
}

/// Creates a Catalog dataset from `body` as client A in `ORG_A`/`prod` and returns its id.
/// Creates a segment definition from a `pql/text` expression (optionally under a merge policy)
/// and returns its id.
pub async fn post_definition(
    app: &TestApp,
    name: &str,
    pql: &str,
    merge_policy_id: Option<&str>,
) -> String {
    let mut body = serde_json::json!({"name": name, "schema": {"name": "_xdm.context.profile"},
        "expression": {"type": "PQL", "format": "pql/text", "value": pql}});
    if let Some(id) = merge_policy_id {
        body["mergePolicyId"] = id.into();
    }
    let created = app
        .request(reqwest::Method::POST, "/data/core/ups/segment/definitions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    json(created).await["id"].as_str().unwrap().to_owned()
}

pub async fn post_dataset(app: &TestApp, body: &serde_json::Value) -> String {
    let created = app
        .request(reqwest::Method::POST, "/data/foundation/catalog/dataSets")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    json(created).await[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned()
}
