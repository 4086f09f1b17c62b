//! An HTTP front for the api that forwards every request and can lose the first answer the
//! api gave with success, answering `503` instead: the client believes a request failed that
//! was in fact taken, and must retry it without the events being stored twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// One request as the front saw it: its path, what the api answered and what the client got.
#[derive(Debug, Clone)]
pub struct Passed {
    pub path: String,
    pub api_status: u16,
    pub client_status: u16,
}

pub struct Front {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    seen: Arc<Mutex<Vec<Passed>>>,
    handle: ServerHandle,
}

struct State {
    target: String,
    client: reqwest::Client,
    lose_next_success: AtomicBool,
    seen: Arc<Mutex<Vec<Passed>>>,
}

impl Front {
    /// Forwards to `target` (`http://host:port`); with `lose_first_success`, the first 2xx the
    /// api answers reaches the client as a `503` with `Retry-After: 1`.
    pub async fn start(target: &str, lose_first_success: bool) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(State {
            target: target.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            lose_next_success: AtomicBool::new(lose_first_success),
            seen: seen.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .default_service(web::to(forward))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            seen,
            handle,
        }
    }

    pub fn seen(&self) -> Vec<Passed> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let stopping = self.handle.stop(false);
        tokio::spawn(stopping);
    }
}

async fn forward(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let uri = request.uri();
    let path = uri.path().to_owned();
    let url = format!(
        "{}{}",
        state.target,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes()).unwrap();
    let mut outgoing = state.client.request(method, url).body(body.to_vec());
    for (name, value) in request.headers() {
        if name != "host" && name != "content-length" {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };
    let api_status = answer.status().as_u16();
    let lose =
        answer.status().is_success() && state.lose_next_success.swap(false, Ordering::SeqCst);
    let mut response = if lose {
        let mut lost = HttpResponse::ServiceUnavailable();
        lost.insert_header(("Retry-After", "1"));
        lost
    } else {
        let mut passed = HttpResponse::build(StatusCode::from_u16(api_status).unwrap());
        for (name, value) in answer.headers() {
            if name != "content-length" && name != "transfer-encoding" {
                passed.insert_header((name.as_str(), value.as_bytes()));
            }
        }
        passed
    };
    let body = answer.bytes().await.unwrap_or_default();
    let response = if lose {
        response
            .content_type("application/problem+json")
            .body(r#"{"status":503,"code":"broker_unavailable"}"#)
    } else {
        response.body(body)
    };
    state.seen.lock().unwrap().push(Passed {
        path,
        api_status,
        client_status: response.status().as_u16(),
    });
    response
}
