//! The echo example as a user runs it: a real process, its flags, its startup error and its
//! graceful shutdown on SIGTERM.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn example_bin() -> std::path::PathBuf {
    // Integration tests live in target/<profile>/deps; cargo builds examples beside it.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join(format!("echo{}", std::env::consts::EXE_SUFFIX))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(port: u16) -> Child {
    Command::new(example_bin())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the echo example is built by cargo test")
}

fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("echo example did not start on {port}");
}

#[tokio::test]
async fn echo_example_serves_and_stops_on_sigterm() {
    let port = free_port();
    let mut child = spawn(port);
    wait_healthy(port);
    let url = format!("http://127.0.0.1:{port}");
    let v: serde_json::Value = comps_core::http_client()
        .post(format!("{url}/v1/echo"))
        .json(&serde_json::json!({"text": "hello, "}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["text"], "hello, opea project!");
    let health: serde_json::Value =
        comps_core::http_client().get(format!("{url}/v1/health_check")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["Service Title"], "echo");

    // A second instance on the same port refuses to start, saying why.
    let mut second = spawn(port);
    let status = second.wait().unwrap();
    assert!(!status.success());
    let mut err = String::new();
    second.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("already in use"), "stderr: {err}");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "graceful exit on SIGTERM, got {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
