//! Settings from `strata.toml`, the environment and flags (issue 18,
//! operations): the order of precedence, `strata config check`, a server
//! that runs with the file's limits, and every bad file named with its
//! key and reason.

use reqwest::StatusCode;

use crate::server::{client, rt, serve};
use crate::util::strata;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write settings");
    path
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "strata.toml",
        "[serve]\nupload_limit_mib = 256\ncallback-ports = [443, 8443]\nallow_signup = true\nmax_layers = 5000\nmax_job_secs = 99\nlisten = \"127.0.0.1:1\"\n",
    );
    // strata.toml is found in the working directory.
    let out = strata()
        .current_dir(dir.path())
        .env("STRATA_MAX_JOB_SECS", "30")
        .env("STRATA_LISTEN", "127.0.0.1:2")
        .args(["config", "check", "--", "--listen", "127.0.0.1:3"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "# settings file: strata.toml",
        "listen = \"127.0.0.1:3\"  # flag",
        "max_job_secs = 30  # environment STRATA_MAX_JOB_SECS",
        "upload_limit_mib = 256  # file",
        "callback_ports = [443, 8443]  # file",
        "allow_signup = true  # file",
        "max_layers = 5000  # file",
        "body_deadline_secs = 20  # default",
        "# public_url = (unset)",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // Named with --config, from anywhere; no file at all is fine too.
    let out = strata().args(["config", "check", "--config"]).arg(&file).output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("upload_limit_mib = 256  # file"));
    let out = strata()
        .current_dir(std::env::temp_dir())
        .args(["config", "check"])
        .env_remove("STRATA_CONFIG")
        .output();
    let out = out.expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("upload_limit_mib = 512  # default"));
}

#[test]
fn a_server_runs_with_the_file_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "limits.toml", "[serve]\nupload_limit_mib = 1\n");
    let s = serve(&["--config", file.to_str().expect("utf-8")]);
    rt().block_on(async {
        // tus discovery tells the limit in force.
        let r = client().request(reqwest::Method::OPTIONS, format!("{}/files/x", s.base)).send().await;
        let r = r.expect("options");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()["tus-max-size"], "1048576");
    });
}

#[test]
fn bad_settings_files_are_refused_naming_the_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, says) in [
        ("[serve]\nuplod_limit_mib = 3\n", "[serve] has no setting `uplod_limit_mib`"),
        ("[serve]\nupload_limit_mib = \"lots\"\n", "[serve] upload_limit_mib: invalid value 'lots'"),
        ("[serve]\nallow_signup = 3\n", "[serve] allow_signup: must be true or false"),
        ("[serve]\ncallback_ports = [80, \"x\"]\n", "[serve] callback_ports: invalid value 'x'"),
        ("[srve]\nlisten = \"x\"\n", "[top level] has no setting `srve`"),
        ("[serve\n", "not valid TOML"),
    ] {
        let file = write(dir.path(), "bad.toml", text);
        for command in [&["serve"][..], &["config", "check"][..]] {
            let out = strata().args(command).arg("--config").arg(&file).output().expect("runs");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{text:?} accepted by {command:?}");
            assert!(err.contains("bad.toml") && err.contains(says), "{text:?}: {err}");
        }
    }
}
