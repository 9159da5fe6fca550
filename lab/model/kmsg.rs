//! One `[[kmsg]]` entry of a scenario: a kernel log line to count.

use serde::{Deserialize, Serialize};

/// One `[[kmsg]]` entry of a scenario: observation `kmsg.<name>`.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KmsgSpec {
    /// Observation name: `kmsg.<name>` counts the matching lines.
    pub name: String,
    /// Text the message must contain (plain substring, case-sensitive).
    pub contains: String,
    /// Only lines that carry this node's netns inode as a whole number.
    #[serde(default)]
    pub node: Option<String>,
}

impl KmsgSpec {
    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(format!(
                "kmsg `{}`: field `name` must be non-empty letters, digits, `_` or `-` \
                 (observation kmsg.<name>)",
                self.name
            ));
        }
        if self.contains.trim().is_empty() {
            return Err(format!(
                "kmsg `{}`: field `contains` is empty; give the text the kernel line carries",
                self.name
            ));
        }
        Ok(())
    }
}
