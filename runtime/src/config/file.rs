//! The `--config` TOML file: the flags' names as keys, each value a string, a number or a boolean.

use std::fs;
use std::path::Path;

use super::settings::known_keys;
use super::ConfigError;

/// Reads the file's `key = value` pairs. Keys and value kinds are checked here, so the error
/// can name the key; the values themselves are parsed as the flags' are.
pub(super) fn read(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_owned(),
        line: source.span().map(|span| line_of(&text, span.start)),
        source: Box::new(source),
    })?;
    let known = known_keys();
    let mut pairs = Vec::new();
    for (key, value) in table {
        if !known.contains(&key) {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        // A list is the flag given once per element (`key-quota = ["...", "..."]`).
        let values = match value {
            toml::Value::Array(items) => items,
            one => vec![one],
        };
        for value in values {
            let text = match value {
                toml::Value::String(text) => text,
                // A number where the flag takes one (`keepalive-max = 3`) is read as its text.
                toml::Value::Integer(n) => n.to_string(),
                // A switch (`accept-proxy-proto = true`).
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::NotAScalar {
                        path: path.to_owned(),
                        key,
                        found: other.type_str(),
                    })
                }
            };
            pairs.push((key.clone(), text));
        }
    }
    Ok(pairs)
}

fn line_of(text: &str, byte: usize) -> usize {
    let end = byte.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}
