//! The HTTP ceiling: actix-web answering 202 to the same request with no work at all.
//! `bare 127.0.0.1:8090`

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    HttpServer::new(|| {
        App::new().route(
            "/v1/events",
            web::post().to(|_body: web::Bytes| async {
                HttpResponse::Accepted()
                    .content_type("application/json")
                    .body(r#"{"ids":[]}"#)
            }),
        )
    })
    .bind(addr)?
    .run()
    .await
}
