//! What can be wrong with a configuration file.

use std::path::{Path, PathBuf};

/// Reading or checking the configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`super::MAX_CONFIG_BYTES`].
    #[error("{path} is {size} bytes, more than a configuration file may be (1 MiB)")]
    TooBig {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("{path}{}: {message}", location(*line, *column))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value, when known.
        line: Option<usize>,
        /// 1-based column (in characters), when known.
        column: Option<usize>,
        /// What is wrong (names the key for unknown keys).
        message: String,
    },
    /// A value parsed but cannot be used.
    #[error("{path}: {key}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, dotted (`cni.bin_dirs`).
        key: String,
        /// Why it cannot be used.
        why: String,
    },
    /// An environment variable or flag has a value that cannot be used.
    #[error("{source_name}: {why}")]
    Override {
        /// The variable or flag.
        source_name: String,
        /// Why its value cannot be used.
        why: String,
    },
}

impl ConfigError {
    /// A TOML error in `text` (read from `path`), located by line and column.
    pub(super) fn parse(path: &Path, text: &str, error: &toml::de::Error) -> Self {
        let (line, column) = match error.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: error.message().trim_end().to_string(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // A span always starts on a char boundary; be safe if it does not.
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, 1000), (3, 1));
    }
}
