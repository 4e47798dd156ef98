//! `comps up` refuses clearly before it starts anything: a taken port names its variable, a
//! missing model names its path, and a smoke run whose answer lacks the expected word fails.
//! (The whole pipeline through `comps up` is the test command's smoke run of scripts/chatqna.sh.)

use std::net::TcpListener;
use std::process::Command;

use comps_tests::procs::{binary, workspace_root};

fn up(args: &[&str]) -> (bool, String) {
    let data = std::env::temp_dir().join(format!("comps-up-test-{}", std::process::id()));
    let out = Command::new(binary("comps"))
        .arg("up")
        .args(["--data-dir", data.to_str().unwrap(), "--no-fetch"])
        .args(args)
        .current_dir(workspace_root())
        .env_remove("RUST_LOG")
        .output()
        .expect("run comps");
    let _ = std::fs::remove_dir_all(&data);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_taken_port_is_named_before_anything_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut args = vec!["--llm-port", &port];
    for other in ["--chatqna-port", "--embedding-port", "--retriever-port", "--rerank-port", "--guardrail-port"] {
        args.extend([other, "0"]);
    }
    let (ok, out) = up(&args);
    assert!(!ok);
    assert!(out.contains(&format!("port {port} is in use")) && out.contains("LLM_PORT"), "{out}");
    assert!(!out.contains("is up on"), "nothing may start: {out}");
}

#[test]
fn a_missing_model_is_named() {
    let (ok, out) = up(&["--llm-model", "models/does-not-exist", "--chatqna-port", "0"]);
    assert!(!ok);
    assert!(out.contains("models/does-not-exist holds no model"), "{out}");
}

#[test]
fn expect_needs_a_smoke_run() {
    let (ok, out) = up(&["--expect", "teal"]);
    assert!(!ok && out.contains("--smoke"), "{out}");
}

#[test]
fn text_logs_to_a_pipe_or_file_carry_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(binary("chatqna"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .env("COMPS_LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chatqna");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("listening");
            let _ = tx.send(line);
            if done {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(30)) {
        let done = line.contains("listening");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "colour codes in a piped log: {lines:?}");
}
