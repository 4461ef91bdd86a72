//! A small builder for a role's allow-list on top of seccompiler's rule
//! map: syscalls allowed outright or only for some argument values, merged
//! so that an outright allow always wins over a conditional one.

use std::collections::BTreeMap;

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::SeccompError;

/// One syscall's entry: allowed for any arguments, or when one rule matches.
#[derive(Debug, Clone)]
enum Allowed {
    Always,
    When(Vec<SeccompRule>),
}

/// The syscalls one thread role may make.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: BTreeMap<i64, Allowed>,
}

/// Builds an `arg <op> value` condition (seccompiler only rejects an
/// argument index above 5, which the callers here never use).
fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    // ioctl requests, fcntl commands, flags and families are 32-bit values.
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(SeccompError::Rule)
}

impl RuleSet {
    /// Allows each of `syscalls` with any arguments.
    pub fn allow(&mut self, syscalls: &[libc::c_long]) -> &mut Self {
        for &nr in syscalls {
            self.rules.insert(nr, Allowed::Always);
        }
        self
    }

    fn add_rule(&mut self, nr: libc::c_long, rule: SeccompRule) {
        match self
            .rules
            .entry(nr)
            .or_insert_with(|| Allowed::When(Vec::new()))
        {
            Allowed::Always => {}
            Allowed::When(rules) => rules.push(rule),
        }
    }

    /// Allows `syscall` when argument `arg` equals one of `values`.
    pub fn allow_arg_in(
        &mut self,
        syscall: libc::c_long,
        arg: u8,
        values: &[u64],
    ) -> Result<&mut Self, SeccompError> {
        for &v in values {
            let rule = SeccompRule::new(vec![cond(arg, SeccompCmpOp::Eq, v)?])
                .map_err(SeccompError::Rule)?;
            self.add_rule(syscall, rule);
        }
        Ok(self)
    }

    /// Allows `syscall` when none of the `mask` bits are set in argument `arg`.
    pub fn allow_arg_without(
        &mut self,
        syscall: libc::c_long,
        arg: u8,
        mask: u64,
    ) -> Result<&mut Self, SeccompError> {
        let rule = SeccompRule::new(vec![cond(arg, SeccompCmpOp::MaskedEq(mask), 0)?])
            .map_err(SeccompError::Rule)?;
        self.add_rule(syscall, rule);
        Ok(self)
    }

    /// Allows `syscall` when all of the `mask` bits are set in argument `arg`.
    pub fn allow_arg_with(
        &mut self,
        syscall: libc::c_long,
        arg: u8,
        mask: u64,
    ) -> Result<&mut Self, SeccompError> {
        let rule = SeccompRule::new(vec![cond(arg, SeccompCmpOp::MaskedEq(mask), mask)?])
            .map_err(SeccompError::Rule)?;
        self.add_rule(syscall, rule);
        Ok(self)
    }

    /// Allows `syscall` when every `(arg, op, value)` condition holds.
    pub fn allow_if(
        &mut self,
        syscall: libc::c_long,
        conds: &[(u8, SeccompCmpOp, u64)],
    ) -> Result<&mut Self, SeccompError> {
        let conds = conds
            .iter()
            .map(|(arg, op, v)| cond(*arg, op.clone(), *v))
            .collect::<Result<Vec<_>, _>>()?;
        let rule = SeccompRule::new(conds).map_err(SeccompError::Rule)?;
        self.add_rule(syscall, rule);
        Ok(self)
    }

    /// Adds everything `other` allows.
    pub fn merge(&mut self, other: &RuleSet) -> &mut Self {
        for (&nr, allowed) in &other.rules {
            match allowed {
                Allowed::Always => {
                    self.rules.insert(nr, Allowed::Always);
                }
                Allowed::When(rules) => {
                    for r in rules {
                        self.add_rule(nr, r.clone());
                    }
                }
            }
        }
        self
    }

    /// Whether `syscall` is allowed for at least some arguments.
    pub fn mentions(&self, syscall: libc::c_long) -> bool {
        self.rules.contains_key(&syscall)
    }

    /// Whether `syscall` is allowed whatever its arguments.
    pub fn allows_always(&self, syscall: libc::c_long) -> bool {
        matches!(self.rules.get(&syscall), Some(Allowed::Always))
    }

    /// The rule map seccompiler compiles (an empty rule list allows outright).
    pub fn into_map(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.rules
            .into_iter()
            .map(|(nr, a)| {
                let rules = match a {
                    Allowed::Always => Vec::new(),
                    Allowed::When(rules) => rules,
                };
                (nr, rules)
            })
            .collect()
    }
}
