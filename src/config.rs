//! Settings from a file, the environment and flags, in that order of
//! precedence from lowest: `strata.toml` (or `--config FILE`, or
//! `STRATA_CONFIG`), then `STRATA_<SETTING>` variables, then flags. Every
//! flag of `strata serve` and `strata ingest` is a setting: in the file
//! under `[serve]` or `[ingest]` with its flag's name (`upload_limit_mib
//! = 256` or `upload-limit-mib = 256`), in the environment as
//! `STRATA_UPLOAD_LIMIT_MIB`. An unknown key or a bad value is an error
//! naming the file, the key and the reason. `strata config check` prints
//! the effective settings of `strata serve` and where each came from.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;

/// The subcommands whose flags are settings.
pub(crate) const SECTIONS: [&str; 2] = ["serve", "ingest"];

/// The file read when neither `--config` nor `STRATA_CONFIG` names one
/// (only if it exists).
pub(crate) const DEFAULT_FILE: &str = "strata.toml";

/// `strata config ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the effective settings of `strata serve` (file, environment,
    /// the flags given after `--`, defaults) and where each came from;
    /// fails naming the problem when the file or a value is wrong.
    Check {
        /// Flags for `strata serve`, as they would be given to it.
        #[arg(last = true)]
        serve: Vec<String>,
    },
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// Not TOML.
    #[error("{}: not valid TOML: {reason}", path.display())]
    Syntax { path: PathBuf, reason: String },
    /// A key that is no setting.
    #[error("{}: [{section}] has no setting `{key}` (see strata {section} --help)", path.display())]
    Unknown { path: PathBuf, section: String, key: String },
    /// A value of the wrong kind.
    #[error("{}: [{section}] {key}: {reason}", path.display())]
    Value { path: PathBuf, section: String, key: String, reason: String },
}

/// The command line, every setting of [`SECTIONS`] also read from
/// `STRATA_<SETTING>`.
pub(crate) fn with_env(command: clap::Command) -> clap::Command {
    let mut command = command;
    for section in SECTIONS {
        command = command.mut_subcommand(section, |sub| {
            sub.mut_args(|arg| {
                let id = arg.get_id().as_str().to_string();
                if arg.is_positional() || arg.get_env().is_some() || id == "help" || id == "version" {
                    return arg;
                }
                // Built once per process, for a fixed set of flags.
                let name: &'static str =
                    Box::leak(format!("STRATA_{}", id.to_ascii_uppercase()).into_boxed_str());
                arg.env(name)
            })
        });
    }
    command
}

/// The settings file to read: `--config FILE` (taken out of `args`),
/// else `STRATA_CONFIG`, else `strata.toml` when it exists.
pub(crate) fn take_file(args: &mut Vec<OsString>) -> Option<PathBuf> {
    let mut named = None;
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy().into_owned();
        if arg == "--" {
            break;
        }
        if arg == "--config" && i + 1 < args.len() {
            named = Some(PathBuf::from(args.remove(i + 1)));
            args.remove(i);
            continue;
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            named = Some(PathBuf::from(path));
            args.remove(i);
            continue;
        }
        i += 1;
    }
    named
        .or_else(|| std::env::var_os("STRATA_CONFIG").map(PathBuf::from))
        .or_else(|| Path::new(DEFAULT_FILE).is_file().then(|| PathBuf::from(DEFAULT_FILE)))
}

/// The file's settings for `section` as flags, keyed by setting id.
pub(crate) fn file_flags(
    path: &Path,
    section: &str,
    sub: &clap::Command,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        ConfigError::Syntax { path: path.into(), reason: e.to_string() }
    })?;
    for (key, _) in doc.iter() {
        if !SECTIONS.contains(&key) {
            return Err(ConfigError::Unknown {
                path: path.into(),
                section: "top level".into(),
                key: key.into(),
            });
        }
    }
    let Some(table) = doc.get(section) else { return Ok(Vec::new()) };
    let table = table.as_table_like().ok_or_else(|| ConfigError::Value {
        path: path.into(),
        section: section.into(),
        key: section.into(),
        reason: "must be a table".into(),
    })?;
    let mut flags = Vec::new();
    for (key, item) in table.iter() {
        let id = key.replace('-', "_");
        let bad = |reason: &str| ConfigError::Value {
            path: path.into(),
            section: section.into(),
            key: key.into(),
            reason: reason.into(),
        };
        let arg = sub.get_arguments().find(|a| a.get_id().as_str() == id && !a.is_positional()).ok_or_else(
            || ConfigError::Unknown { path: path.into(), section: section.into(), key: key.into() },
        )?;
        let long = arg.get_long().ok_or_else(|| bad("is not a setting"))?;
        let takes_value = arg.get_action().takes_values();
        let value = item.as_value().ok_or_else(|| bad("must be a value"))?;
        let scalar = |v: &toml_edit::Value| -> Option<String> {
            match v {
                toml_edit::Value::String(s) => Some(s.value().clone()),
                toml_edit::Value::Integer(i) => Some(i.value().to_string()),
                toml_edit::Value::Float(f) => Some(f.value().to_string()),
                toml_edit::Value::Boolean(b) => Some(b.value().to_string()),
                _ => None,
            }
        };
        // The value through the flag's own parser, alone, so its error
        // names the file and key.
        let check = |v: &str| -> Result<(), ConfigError> {
            let alone = clap::Command::new("setting").no_binary_name(true).arg(arg.clone());
            alone.try_get_matches_from([format!("--{long}={v}")]).map(|_| ()).map_err(|e| {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
                bad(&first)
            })
        };
        let args = match value {
            toml_edit::Value::Boolean(b) if !takes_value => {
                if *b.value() {
                    vec![format!("--{long}")]
                } else {
                    Vec::new()
                }
            }
            _ if !takes_value => return Err(bad("must be true or false")),
            toml_edit::Value::Array(items) => {
                let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
                let parts = parts.ok_or_else(|| bad("must be a list of plain values"))?;
                parts.iter().try_for_each(|p| check(p))?;
                vec![format!("--{long}={}", parts.join(","))]
            }
            v => {
                let v = scalar(v).ok_or_else(|| bad("must be a plain value"))?;
                check(&v)?;
                vec![format!("--{long}={v}")]
            }
        };
        flags.push((id, args));
    }
    Ok(flags)
}

/// `args` with the file's settings for the subcommand added where neither
/// a flag nor the environment gave one; the ids taken from the file.
pub(crate) fn layered(
    command: &clap::Command,
    mut args: Vec<OsString>,
    file: Option<&Path>,
) -> Result<(Vec<OsString>, BTreeSet<String>), String> {
    let mut from_file = BTreeSet::new();
    let Some(path) = file else { return Ok((args, from_file)) };
    let Ok(matches) = command.clone().try_get_matches_from(&args) else { return Ok((args, from_file)) };
    let Some((name, sub_matches)) = matches.subcommand() else { return Ok((args, from_file)) };
    let (section, sub_matches, sub) = if name == "config" {
        // `strata config check -- FLAGS` reads as `strata serve FLAGS`.
        let flags: Vec<String> = sub_matches
            .subcommand()
            .and_then(|(_, m)| m.get_many::<String>("serve"))
            .map(|v| v.cloned().collect())
            .unwrap_or_default();
        let serve = command.find_subcommand("serve").ok_or("no serve command")?;
        let probe = std::iter::once("serve".to_string()).chain(flags);
        let m = serve.clone().try_get_matches_from(probe).map_err(|e| e.to_string())?;
        ("serve", m, serve)
    } else if SECTIONS.contains(&name) {
        (name, sub_matches.clone(), command.find_subcommand(name).ok_or("no such command")?)
    } else {
        return Ok((args, from_file));
    };
    let flags = file_flags(path, section, sub).map_err(|e| e.to_string())?;
    let mut extra = Vec::new();
    for (id, flag) in flags {
        let given = matches!(
            sub_matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !given {
            from_file.insert(id);
            extra.extend(flag);
        }
    }
    if name == "config" {
        // Given to `check` after its `--`.
        if !args.iter().any(|a| a == "--") {
            args.push("--".into());
        }
    }
    args.extend(extra.into_iter().map(OsString::from));
    Ok((args, from_file))
}

/// `strata config check`: the effective serve settings, one per line.
pub(crate) fn check(
    command: &clap::Command,
    flags: &[String],
    from_file: &BTreeSet<String>,
    file: Option<&Path>,
) -> std::process::ExitCode {
    let Some(serve) = command.find_subcommand("serve") else { return std::process::ExitCode::FAILURE };
    let probe = std::iter::once("serve".to_string()).chain(flags.iter().cloned());
    let matches = match serve.clone().try_get_matches_from(probe) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {}", e.render().to_string().trim_start_matches("error: "));
            return std::process::ExitCode::FAILURE;
        }
    };
    // The same checks `strata serve` makes of the values.
    if let Err(e) = <crate::serve::ServeArgs as clap::FromArgMatches>::from_arg_matches(&matches) {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    match file {
        Some(path) => println!("# settings file: {}", path.display()),
        None => println!("# settings file: none ({DEFAULT_FILE} not found, STRATA_CONFIG unset)"),
    }
    println!("[serve]");
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help"
            || id == "version"
            || arg.is_hide_set() && matches.value_source(id) == Some(ValueSource::DefaultValue)
        {
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            Some(ValueSource::EnvVariable) => format!("environment STRATA_{}", id.to_ascii_uppercase()),
            Some(ValueSource::CommandLine) if from_file.contains(id) => "file".to_string(),
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::DefaultValue) => "default".to_string(),
            _ => "unset".to_string(),
        };
        let shown = match values.as_slice() {
            [] if !arg.get_action().takes_values() => matches.get_flag(id).to_string(),
            [] => {
                println!("# {id} = (unset)");
                continue;
            }
            [one] if one.parse::<f64>().is_ok() || one == "true" || one == "false" => one.clone(),
            [one] => format!("{one:?}"),
            many => format!("[{}]", many.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")),
        };
        println!("{id} = {shown}  # {source}");
    }
    std::process::ExitCode::SUCCESS
}
