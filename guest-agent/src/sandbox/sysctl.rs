//! Writing sysctls under /proc/sys, remembering the old values.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::error::SandboxError;
use super::spec::Sysctl;

/// Fails, naming the key, if the running kernel lacks any of the sysctls.
pub fn check_exist(sysctls: &[Sysctl]) -> Result<(), SandboxError> {
    for s in sysctls {
        if !s.path.is_file() {
            return Err(SandboxError::invalid(format!(
                "sysctls[{:?}]: no such sysctl in this kernel",
                s.key
            )));
        }
    }
    Ok(())
}

/// Writes one sysctl; a value the kernel refuses is the caller's mistake.
pub fn write(s: &Sysctl) -> Result<(), SandboxError> {
    fs::write(&s.path, &s.value).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidInput => SandboxError::invalid(format!(
            "sysctls[{:?}]: the kernel refused {:?}",
            s.key, s.value
        )),
        _ => SandboxError::internal(format!("write sysctl {}", s.key), e),
    })
}

/// Old values of the sysctls written.
#[derive(Debug, Default)]
pub struct Previous(Vec<(PathBuf, Vec<u8>)>);

impl Previous {
    /// Writes the old values back, newest first.
    pub fn undo(self) {
        for (path, value) in self.0.into_iter().rev() {
            if let Err(err) = fs::write(&path, value) {
                tracing::warn!(path = %path.display(), %err, "cannot restore sysctl");
            }
        }
    }
}

/// Writes `sysctls` from this thread's namespaces; on error `previous` holds what to undo.
pub fn apply(sysctls: &[&Sysctl], previous: &mut Previous) -> Result<(), SandboxError> {
    for s in sysctls {
        let old = fs::read(&s.path)
            .map_err(|e| SandboxError::internal(format!("read sysctl {}", s.key), e))?;
        write(s)?;
        previous.0.push((s.path.clone(), old));
    }
    Ok(())
}
