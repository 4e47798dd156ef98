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

/// `--restart on-failure`: a service killed with SIGKILL is started again by the supervisor on
/// the same address (its callers were given that address), and counts as back only once its
/// health check answers.
#[tokio::test]
async fn a_killed_service_comes_back_on_the_same_address() {
    use comps_launcher::supervise::{Event, Restart, RestartPolicy, Supervisor};
    use std::time::{Duration, Instant};

    let log = std::env::temp_dir().join(format!("comps-restart-test-{}.log", std::process::id()));
    let spec = comps_launcher::ProcSpec::new("chatqna", binary("chatqna")).log_file(&log).env("RUST_LOG", "info");
    let mut procs = vec![comps_launcher::Proc::spawn(&spec).unwrap()];
    let addr = procs[0].wait_listening(Duration::from_secs(60)).unwrap();
    procs[0].wait_healthy(Duration::from_secs(60)).await.unwrap();
    let first_pid = procs[0].pid();

    let restart = Restart {
        policy: RestartPolicy::OnFailure,
        delay: Duration::from_millis(100),
        max_in_a_row: 3,
        start_timeout: Duration::from_secs(60),
    };
    let mut sup = Supervisor::new(restart, 1);
    let killed = Command::new("kill").args(["-9", &first_pid.to_string()]).status().unwrap();
    assert!(killed.success());

    let mut events = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) && !events.iter().any(|e| matches!(e, Event::Back { .. })) {
        events.extend(sup.tick(&mut procs).await);
        assert!(!events.iter().any(|e| matches!(e, Event::Fatal { .. })), "{events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        matches!(&events[..], [Event::Failed { why, attempt: 1, .. }, Event::Back { .. }] if why.contains("SIGKILL")),
        "{events:?}"
    );
    let p = &procs[0];
    assert_eq!(p.addr(), Some(addr), "the restart listens where the first one did");
    assert_ne!(p.pid(), first_pid);
    assert_eq!(p.restarts, 1);
    let health = reqwest::get(format!("http://{addr}/v1/health_check")).await.unwrap();
    assert_eq!(health.status(), 200);
    let written = std::fs::read_to_string(&log).unwrap();
    assert_eq!(written.matches("listening").count(), 2, "both runs in one log: {written}");
    let _ = std::fs::remove_file(&log);
}

/// A service whose port is taken says so before it loads its model (seconds for an LLM), naming
/// the address.
#[test]
fn a_service_names_its_taken_port_before_loading_a_model() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let model = workspace_root().join("models/Qwen2.5-Coder-0.5B-Instruct");
    let out = Command::new(binary("comps-llm"))
        .args(["--host", "127.0.0.1", "--port", &port, "--model", model.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .expect("run comps-llm");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(text.contains(&format!("127.0.0.1:{port} is already in use")), "{text}");
    assert!(!text.to_lowercase().contains("loaded"), "the model was loaded first: {text}");
}
