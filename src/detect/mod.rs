//! detect (stub until the engine lands)

/// A rule as written in the config file.
pub type RuleConfig = toml::Table;

/// A rule validation problem.
#[derive(Debug)]
pub struct RuleError;

impl RuleError {
    /// The key.
    pub fn key(&self) -> String {
        String::new()
    }
    /// The problem.
    pub fn problem(&self) -> String {
        String::new()
    }
}

/// Validates the rules of a config file.
pub fn validate_rule_configs(_rules: &[RuleConfig]) -> Result<(), RuleError> {
    Ok(())
}

/// The rules in force: the file's, or the built-in set when it has none.
pub fn effective_rule_configs(rules: &[RuleConfig]) -> Vec<RuleConfig> {
    rules.to_vec()
}
