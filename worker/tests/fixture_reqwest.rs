//! drover-worker as a test fixture, driven by an HTTP client (reqwest): the
//! pattern the README's "Running programmatically" section shows, which
//! tests/tests/docs.rs checks is this file's code, verbatim.

use drover_worker::Server;

#[tokio::test]
async fn the_app_answers_a_real_http_client() {
    let echo = axum::routing::post(|body: String| async move { body });
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .route("/echo", echo);

    let server = Server::bind("127.0.0.1:0").await.unwrap();
    server.start_serving(app).await.unwrap(); // accepting now, or Err; never hangs
    let addr = server.local_addrs()[0].tcp().expect("a TCP listener"); // port 0 resolved
    let base = format!("http://{addr}");

    // no_proxy: an HTTP_PROXY in the environment must not see test traffic.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello");

    let echoed = client.post(format!("{base}/echo")).body("ping");
    let echoed = echoed.send().await.unwrap();
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.text().await.unwrap(), "ping");

    server.close(); // sync; listeners closed when it returns
    let report = server.wait_closed().await.unwrap(); // every connection gone, hooks run
    assert_eq!(report.aborted, 0);
    assert_eq!(report.requests_served, 2);
}
