//! Finding (building, once per test process) the `tunnel-server` binary under test.
//!
//! Cargo sets `CARGO_BIN_EXE_*` only for a package's own binaries, so the harness builds the
//! server itself; that keeps `cargo test --workspace` the single test command.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Environment variable naming a prebuilt server binary; when set, nothing is built.
pub const SERVER_BIN_ENV: &str = "TUNNEL_SERVER_BIN";

const PACKAGE: &str = "tunnel-runtime";
const BIN: &str = "tunnel-server";

/// Path of the `tunnel-server` binary: `$TUNNEL_SERVER_BIN`, or the one `cargo build` produces
/// for this workspace with the profile the tests were built in.
///
/// Builds at most once per process; a failed build fails every test that needs the server,
/// each with the build's output.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(locate) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives in a subdirectory of the workspace")
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = env::var_os(SERVER_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{SERVER_BIN_ENV}={} is not a file", path.display()))
        };
    }
    build()
}

fn release() -> bool {
    !cfg!(debug_assertions)
}

fn build() -> Result<PathBuf, String> {
    // At run time cargo tells the test which cargo ran it; the compile-time value is the fallback.
    let cargo = env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "-p", PACKAGE, "--bin", BIN])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null());
    if release() {
        command.arg("--release");
    }
    let output = command.output().map_err(|e| {
        format!(
            "could not run {} to build {BIN}: {e}",
            Path::new(&cargo).display()
        )
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "building {BIN} failed ({}); set {SERVER_BIN_ENV} to test a prebuilt binary\n{stderr}",
            output.status
        ));
    }
    // Cargo reports where it put the executable; that follows CARGO_TARGET_DIR, build.target-dir
    // and any other configuration without us re-implementing them.
    let reported = stdout
        .lines()
        .filter(|line| line.contains("\"compiler-artifact\""))
        .filter_map(|line| json_string_field(line, "executable"))
        .map(PathBuf::from)
        .find(|path| path.file_stem().is_some_and(|stem| stem == BIN));
    let path = reported.unwrap_or_else(|| {
        target_dir()
            .join(if release() { "release" } else { "debug" })
            .join(BIN)
    });
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "cargo built {BIN} but {} does not exist\n{stderr}",
            path.display()
        ))
    }
}

fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The value of a string field `"key":"..."` in one line of cargo's JSON output.
fn json_string_field(line: &str, key: &str) -> Option<String> {
    let marker = format!("\"{key}\":\"");
    let start = line.find(&marker)? + marker.len();
    let mut value = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_executable_from_cargo_json() {
        let line = r#"{"reason":"compiler-artifact","filenames":["/t/debug/tunnel-server"],"executable":"/t/de\"bug/tunnel-server","fresh":true}"#;
        assert_eq!(
            json_string_field(line, "executable").as_deref(),
            Some("/t/de\"bug/tunnel-server")
        );
        let line = r#"{"reason":"compiler-artifact","executable":null}"#;
        assert_eq!(json_string_field(line, "executable"), None);
    }
}
