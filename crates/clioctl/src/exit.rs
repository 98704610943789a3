//! What clioctl's exit code means, and the error that carries one.

use std::fmt;

/// Exit codes (also listed in `clioctl --help`).
pub mod code {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// A service refused or failed the call (the message says which and why).
    pub const FAILED: u8 = 1;
    /// Bad arguments or configuration: a missing token names the setting to add.
    pub const USAGE: u8 = 2;
    /// The outcome is bad: the job ended FAILED, CANCELLED or DEAD_LETTERED, the audit
    /// chain is broken, or an offboarding left connections unrevoked.
    pub const BAD_OUTCOME: u8 = 3;
    /// A service could not be reached (the message names the endpoint).
    pub const UNREACHABLE: u8 = 4;
}

pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  done
  1  a service refused or failed the call
  2  bad arguments or configuration (a missing token names the setting to add)
  3  bad outcome: the job ended FAILED, CANCELLED or DEAD_LETTERED, the audit chain is
     broken, or an offboarding left connections unrevoked
  4  a service could not be reached (the message names the endpoint)";

/// An error with the exit code it should end clioctl with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error: its [`Failure`]'s, else [`code::FAILED`].
pub fn code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(code::FAILED, |failure| failure.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_comes_from_the_failure_anywhere_in_the_chain() {
        let failure: anyhow::Error = Failure::new(code::BAD_OUTCOME, "job ended FAILED").into();
        assert_eq!(
            code_of(&failure.context("import submit")),
            code::BAD_OUTCOME
        );
        assert_eq!(code_of(&anyhow::anyhow!("anything else")), code::FAILED);
    }
}
