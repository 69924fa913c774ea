//! Reference token counts for the tests: each model family's own tokenizer, run by the servers
//! `scripts/reference_tokenizers.py` (llama3, llama4, mistral-v1, mistral-v1-specials) and
//! `scripts/reference_tokenizers.mjs` (llama2, llama2-specials, claude2) from what
//! `scripts/reference-tokenizers.sh install` put in `$RAG_TEST_REFERENCE_TOKENIZERS`.
//! `scripts/test.sh` installs them and sets the variable.
//!
//! Each server starts once per test process, on first use, and reads one JSON request a line
//! on its stdin. It exits at the end of its stdin, which the OS closes when the test process
//! exits, however it exits. Without the references every call panics: the tests that need
//! them fail, they never skip.
//!
//! Include it with `#[path = "support/reference.rs"] mod reference;`.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The variable naming the directory `scripts/reference-tokenizers.sh install` filled.
pub const ENV: &str = "RAG_TEST_REFERENCE_TOKENIZERS";

const HINT: &str = "run scripts/test.sh, which installs the reference tokenizers; or \
    scripts/reference-tokenizers.sh install && export \"$(scripts/reference-tokenizers.sh env)\"";

/// The tokenizers of the Python server.
pub const PYTHON: &[&str] = &["llama3", "llama4", "mistral-v1", "mistral-v1-specials"];
/// The tokenizers of the Node server.
pub const NODE: &[&str] = &["llama2", "llama2-specials", "claude2"];

/// The number of tokens of each text, by reference tokenizer `tokenizer`, in one request.
///
/// # Panics
///
/// When the references are not installed, the server cannot start or fails, or `tokenizer`
/// is none of [`PYTHON`] or [`NODE`].
pub fn counts(tokenizer: &str, texts: &[String]) -> Vec<usize> {
    let server = if PYTHON.contains(&tokenizer) {
        Server::Python
    } else if NODE.contains(&tokenizer) {
        Server::Node
    } else {
        panic!(
            "unknown reference tokenizer {tokenizer:?}: the references are {:?}",
            [PYTHON, NODE].concat()
        );
    };
    // Lock, ask, unlock; panic only after unlocking, so one failed test poisons nothing.
    let answer = {
        let mut process = server.process().lock().unwrap_or_else(|e| e.into_inner());
        process.ask(tokenizer, texts)
    };
    match answer {
        Ok(counts) if counts.len() == texts.len() => counts,
        Ok(counts) => panic!(
            "reference tokenizer {tokenizer}: {} counts for {} texts",
            counts.len(),
            texts.len()
        ),
        Err(e) => panic!("reference tokenizer {tokenizer}: {e}\n{HINT}"),
    }
}

/// The number of tokens of `text` by reference tokenizer `tokenizer`; see [`counts`].
pub fn count(tokenizer: &str, text: &str) -> usize {
    counts(tokenizer, &[text.to_owned()])[0]
}

#[derive(Clone, Copy)]
enum Server {
    Python,
    Node,
}

impl Server {
    /// The running server, started on first use.
    fn process(self) -> &'static Mutex<Process> {
        static PYTHON: OnceLock<Mutex<Process>> = OnceLock::new();
        static NODE: OnceLock<Mutex<Process>> = OnceLock::new();
        let cell = match self {
            Server::Python => &PYTHON,
            Server::Node => &NODE,
        };
        // A start that fails panics here and leaves the cell empty: every test that asks
        // again fails with the same message.
        cell.get_or_init(|| match self.start() {
            Ok(process) => Mutex::new(process),
            Err(e) => panic!("the reference tokenizers cannot start: {e}\n{HINT}"),
        })
    }

    fn start(self) -> Result<Process, String> {
        let dir = match std::env::var_os(ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => return Err(format!("{ENV} is not set")),
        };
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
        let (program, script, needs) = match self {
            Server::Python => (
                dir.join("venv/bin/python"),
                scripts.join("reference_tokenizers.py"),
                dir.join("venv/bin/python"),
            ),
            Server::Node => (
                PathBuf::from("node"),
                scripts.join("reference_tokenizers.mjs"),
                dir.join("node/node_modules"),
            ),
        };
        if !needs.exists() {
            return Err(format!(
                "{} is missing ({ENV}={} is not an installed reference directory)",
                needs.display(),
                dir.display()
            ));
        }
        let mut child = Command::new(&program)
            .arg(&script)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {} {}: {e}", program.display(), script.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(Process {
            what: format!("{} {}", program.display(), script.display()),
            child,
            stdin,
            stdout,
        })
    }
}

/// A running server and its pipes.
struct Process {
    what: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Process {
    fn ask(&mut self, tokenizer: &str, texts: &[String]) -> Result<Vec<usize>, String> {
        let mut request = serde_json::to_string(&serde_json::json!({
            "tokenizer": tokenizer,
            "texts": texts,
        }))
        .expect("a request serializes");
        request.push('\n');
        let sent = self
            .stdin
            .write_all(request.as_bytes())
            .and_then(|()| self.stdin.flush());
        let mut line = String::new();
        let read = sent.and_then(|()| self.stdout.read_line(&mut line));
        match read {
            Ok(n) if n > 0 => {}
            Ok(_) => {
                let status = match self.child.wait() {
                    Ok(status) => format!("it exited ({status})"),
                    Err(e) => format!("its status is unknown: {e}"),
                };
                return Err(format!(
                    "{} closed its output: {status}; its stderr is above",
                    self.what
                ));
            }
            Err(e) => {
                let status = self.status();
                return Err(format!("talking to {}: {e}; {status}", self.what));
            }
        }
        let answer: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("{} answered {line:?}, not JSON: {e}", self.what))?;
        if let Some(error) = answer.get("error") {
            return Err(format!(
                "{} answered an error: {}",
                self.what,
                error.as_str().unwrap_or_default()
            ));
        }
        answer
            .get("counts")
            .and_then(|c| c.as_array())
            .and_then(|c| c.iter().map(|n| n.as_u64().map(|n| n as usize)).collect())
            .ok_or_else(|| format!("{} answered {line:?}, not counts", self.what))
    }

    /// How the server is doing, for error messages (its stderr is the test's).
    fn status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited ({status}); its stderr is above"),
            Ok(None) => "it is still running".to_owned(),
            Err(e) => format!("its status is unknown: {e}"),
        }
    }
}
