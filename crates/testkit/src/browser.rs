//! A headless Chromium driven over WebDriver (Debian's `chromium` + `chromium-driver`), spoken
//! directly with reqwest: a dozen endpoints, no extra client or TLS stack to pull in.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: Duration = Duration::from_secs(10);

pub struct Browser {
    http: reqwest::Client,
    driver_url: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn find_program(names: &[&str], variable: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(variable) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let paths = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium. Without chromedriver it says why and
    /// returns `None`, or panics when `EYE_REQUIRE_SERVICES=1`.
    pub async fn start(test: &str) -> Option<Self> {
        let Some(chromedriver) = find_program(&["chromedriver"], "EYE_CHROMEDRIVER") else {
            let why = "chromedriver is not installed (apt-get install chromium chromium-driver, or set EYE_CHROMEDRIVER)";
            if std::env::var("EYE_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!("{test}: EYE_REQUIRE_SERVICES=1 but {why}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping browser test {test}: {why}"
            );
            return None;
        };
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver did not start");
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http.get(format!("{driver_url}/status")).send().await;
            if let Ok(response) = ready
                && response
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({"args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1400,1000",
            format!("--user-data-dir={}", profile.path().display()),
        ]});
        if let Some(binary) = find_program(
            &["chromium", "chromium-browser", "google-chrome"],
            "EYE_CHROMIUM",
        ) {
            options["binary"] = json!(binary);
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options,
        }}});
        let created: Value = http
            .post(format!("{driver_url}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Some(Self {
            http,
            driver_url,
            session,
            driver,
            _profile: profile,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver_url, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    pub async fn url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn back(&self) {
        self.post("/back", json!({})).await;
    }

    pub async fn source(&self) -> String {
        self.get("/source")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn try_find(&self, css: &str) -> Option<String> {
        let found = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(id) = self.try_find(css).await {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "no element matches `{css}` on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.try_find(css).await.is_some()
    }

    /// The text of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        let mut texts = Vec::new();
        for element in found.as_array().cloned().unwrap_or_default() {
            let id = element[ELEMENT].as_str().unwrap_or_default().to_owned();
            let text = self.get(&format!("/element/{id}/text")).await;
            texts.push(text.as_str().unwrap_or_default().to_owned());
        }
        texts
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.get(&format!("/element/{id}/text"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The value of `script` (a function body: `return …`) run in the page.
    pub async fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Replaces an input's value.
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({"text": text}))
            .await;
    }

    /// Chooses the option with this visible text in a `<select>`.
    pub async fn select(&self, css: &str, option: &str) {
        let select = self.find(css).await;
        let found = self
            .post(
                &format!("/element/{select}/elements"),
                json!({"using": "css selector", "value": "option"}),
            )
            .await;
        for element in found.as_array().cloned().unwrap_or_default() {
            let id = element[ELEMENT].as_str().unwrap_or_default().to_owned();
            if self.get(&format!("/element/{id}/text")).await == option {
                self.post(&format!("/element/{id}/click"), json!({})).await;
                return;
            }
        }
        panic!("no option `{option}` in `{css}`");
    }

    /// Waits until the current URL contains `part`.
    pub async fn wait_for_url(&self, part: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.url().await.contains(part) {
            assert!(
                Instant::now() < deadline,
                "the URL never contained `{part}`: {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the window when `EYE_SCREENSHOTS` names a directory.
    pub async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("EYE_SCREENSHOTS") else {
            return;
        };
        let encoded = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    /// Ends the session (which closes Chromium) over a plain socket, since `drop` cannot await.
    fn drop(&mut self) {
        let address = self.driver_url.trim_start_matches("http://").to_owned();
        if let Ok(mut stream) = TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Serves `html` on `GET /shop` of `listener` as a site would, and, when given, the `.js` files
/// of a folder under a path prefix (a site that hosts an SDK itself), until the test ends.
pub fn serve_site(
    listener: tokio::net::TcpListener,
    html: String,
    scripts: Option<(&'static str, PathBuf)>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (html, scripts) = (html.clone(), scripts.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let path = line.split(' ').nth(1).unwrap_or_default();
                let script = scripts.and_then(|(prefix, folder)| {
                    let file = path.strip_prefix(prefix)?;
                    (file.ends_with(".js") && !file.contains(['/', '\\']))
                        .then(|| folder.join(file))
                });
                let (status, kind, body) = if path == "/shop" {
                    ("200 OK", "text/html", html.into_bytes())
                } else if let Some(file) = script {
                    match tokio::fs::read(file).await {
                        Ok(body) => ("200 OK", "text/javascript", body),
                        Err(_) => ("404 Not Found", "text/plain", Vec::new()),
                    }
                } else {
                    ("404 Not Found", "text/plain", Vec::new())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
}
