//! Reading settings from the environment, once, at start-up. Each setting is looked up through
//! an [`EnvSource`] so tests can pass a map instead of mutating the process environment.

use std::collections::HashMap;

/// Where settings come from: the process environment in functions, a map in tests.
pub trait EnvSource {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl EnvSource for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

/// A setting that is missing or does not parse. The message names the variable and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("environment variable {name} is required")]
    Missing { name: &'static str },
    #[error("environment variable {name}={value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// A required, non-empty string setting.
pub fn required(env: &(impl EnvSource + ?Sized), name: &'static str) -> Result<String, EnvError> {
    match env.get(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(EnvError::Missing { name }),
    }
}

/// An optional unsigned integer setting with a default.
pub(crate) fn u64_or(
    env: &(impl EnvSource + ?Sized),
    name: &'static str,
    default: u64,
) -> Result<u64, EnvError> {
    match env.get(name) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|e| EnvError::Invalid {
            name,
            value,
            reason: format!("not an unsigned integer ({e})"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_blank_required_settings_are_named() {
        let env: &[(&str, &str)] = &[("BLANK", "  ")];
        assert_eq!(
            required(env, "BLANK"),
            Err(EnvError::Missing { name: "BLANK" })
        );
        assert_eq!(
            required(env, "ABSENT"),
            Err(EnvError::Missing { name: "ABSENT" })
        );
    }

    #[test]
    fn integers_default_when_absent_and_refuse_garbage() {
        let env: &[(&str, &str)] = &[("N", "12"), ("BAD", "-3")];
        assert_eq!(u64_or(env, "N", 5), Ok(12));
        assert_eq!(u64_or(env, "ABSENT", 5), Ok(5));
        let err = u64_or(env, "BAD", 5).unwrap_err().to_string();
        assert!(err.contains("BAD=\"-3\""), "{err}");
    }
}
