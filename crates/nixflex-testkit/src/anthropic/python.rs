//! Runs the scripts in `crates/nixflex-testkit/tests/py` that drive an emulator with a
//! provider's official Python client library (`anthropic`, `openai`, `deepgram-sdk`).
//!
//! Shared by the official-client tests of every emulator. It never skips: a missing
//! `python3` or package is an error naming the `pip install` line that fixes it. The child is
//! polled with async sleeps (so the emulator keeps serving on the same runtime) and killed at
//! the deadline.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// What a finished script printed.
#[derive(Debug, Clone)]
pub struct ScriptOutput {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Checks that `python3` can import `module`.
///
/// # Errors
/// A message naming what to install.
pub async fn require_module(module: &str, pip_requirement: &str) -> Result<(), String> {
    let child = Command::new("python3")
        .arg("-c")
        .arg(format!("import {module}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("python3 is required to run the official-client test but cannot be started ({error}); install Python 3 and `pip install {pip_requirement}`"))?;
    let (success, _, stderr) = wait(child, Duration::from_secs(60)).await?;
    if success {
        Ok(())
    } else {
        Err(format!(
            "the Python package for `{module}` is missing: `pip install {pip_requirement}` (python3 said: {})",
            stderr.trim()
        ))
    }
}

/// Runs `python3 <script>` with `env` added, for at most `timeout`.
///
/// # Errors
/// A message with the script's output when it fails, times out or cannot start.
pub async fn run_script(
    script: &Path,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<ScriptOutput, String> {
    let mut command = Command::new("python3");
    command.arg(script).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command
        .spawn()
        .map_err(|error| format!("cannot start python3 {}: {error}", script.display()))?;
    let (success, stdout, stderr) = wait(child, timeout).await?;
    if success {
        Ok(ScriptOutput { stdout, stderr })
    } else {
        Err(format!(
            "{} failed.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            script.display()
        ))
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

async fn wait(
    mut child: std::process::Child,
    timeout: Duration,
) -> Result<(bool, String, String), String> {
    // Pipes are drained on their own threads so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = stdout.join().unwrap_or_default();
                let stderr = stderr.join().unwrap_or_default();
                return Err(format!(
                    "python3 did not finish within {timeout:?}.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
                ));
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => return Err(format!("cannot wait for python3: {error}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok((status.success(), stdout, stderr))
}
