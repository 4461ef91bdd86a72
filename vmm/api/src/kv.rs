//! The one `key=value[,key=value...]` splitter behind the `--disk`,
//! `--fs` and `--net` flags, and the error they share.

/// A flag value that cannot be parsed or checked; the message names the
/// flag (or the config field) and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin} {arg}: {reason}")]
pub struct SpecError {
    /// `--disk`, `--fs`, `--net`, or a config field such as `nets[1]`.
    pub origin: String,
    /// The value as given (or rendered back in flag form).
    pub arg: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SpecError {
    /// An error about `arg` of the flag `flag`.
    pub fn new(flag: &str, arg: &str, reason: impl Into<String>) -> Self {
        SpecError {
            origin: flag.to_string(),
            arg: arg.to_string(),
            reason: reason.into(),
        }
    }
}

/// Splits `arg` at commas into `(key, value)` pairs; an item without `=`
/// has no value (a bare option such as `ro`). Every key may appear once.
/// `whole` is the value as given, for error messages.
pub fn split<'a>(
    flag: &str,
    whole: &str,
    arg: &'a str,
) -> Result<Vec<(&'a str, Option<&'a str>)>, SpecError> {
    let mut out: Vec<(&str, Option<&str>)> = Vec::new();
    for item in arg.split(',') {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(SpecError::new(flag, whole, format!("{key} given twice")));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Takes the value of `key` out of `pairs`; a bare `key` (no `=`) is an error.
pub fn take<'a>(
    flag: &str,
    arg: &str,
    pairs: &mut Vec<(&'a str, Option<&'a str>)>,
    key: &str,
) -> Result<Option<&'a str>, SpecError> {
    let Some(i) = pairs.iter().position(|(k, _)| *k == key) else {
        return Ok(None);
    };
    match pairs.remove(i).1 {
        Some(v) => Ok(Some(v)),
        None => Err(SpecError::new(
            flag,
            arg,
            format!("{key} needs a value ({key}=...)"),
        )),
    }
}

/// Fails on the first pair nobody took, listing the known options.
pub fn no_leftovers(
    flag: &str,
    arg: &str,
    pairs: &[(&str, Option<&str>)],
    known: &str,
) -> Result<(), SpecError> {
    match pairs.first() {
        None => Ok(()),
        Some((k, v)) => {
            let item = match v {
                Some(v) => format!("{k}={v}"),
                None => k.to_string(),
            };
            Err(SpecError::new(
                flag,
                arg,
                format!("unknown option {item:?} (known: {known})"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_takes() {
        let mut p = split("--x", "", "a=1,b,c=").unwrap();
        assert_eq!(take("--x", "", &mut p, "a").unwrap(), Some("1"));
        assert_eq!(take("--x", "", &mut p, "c").unwrap(), Some(""));
        assert_eq!(take("--x", "", &mut p, "z").unwrap(), None);
        assert!(take("--x", "v", &mut p.clone(), "b").is_err());
        let err = no_leftovers("--x", "v", &p, "a, c").unwrap_err();
        assert_eq!(err.to_string(), "--x v: unknown option \"b\" (known: a, c)");
        let err = split("--x", "a=1,a=2", "a=1,a=2").unwrap_err();
        assert_eq!(err.to_string(), "--x a=1,a=2: a given twice");
    }
}
