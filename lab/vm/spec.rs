//! What `--kernel` names: a kernel file or build tree on disk, or a Debian package
//! in a suite.

use anyhow::{bail, Result};
use std::path::PathBuf;

/// Suite used when `debian:PACKAGE` names none.
pub const DEFAULT_SUITE: &str = "bookworm";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// `path/to/bzImage|vmlinux` (bring your own; `--modules` gives lib/modules/VERSION),
    /// or a kernel build tree (a directory with arch/x86/boot/bzImage, whose modules
    /// come from its modules.order): told apart when the kernel is obtained.
    File(PathBuf),
    /// `debian:PACKAGE[/SUITE]`.
    Debian { package: String, suite: String },
}

impl KernelSpec {
    pub fn parse(s: &str) -> Result<KernelSpec> {
        let Some(rest) = s.strip_prefix("debian:") else {
            if s.is_empty() {
                bail!("empty --kernel: give a kernel image path or debian:PACKAGE[/SUITE]");
            }
            return Ok(KernelSpec::File(PathBuf::from(s)));
        };
        let (package, suite) = match rest.split_once('/') {
            Some((p, s)) => (p, s),
            None => (rest, DEFAULT_SUITE),
        };
        let package = expand_alias(package);
        let valid = |x: &str, extra: &str| {
            !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c))
        };
        if !valid(&package, "+-.") {
            bail!(
                "`{s}`: `{package}` is not a Debian package name \
                 (e.g. debian:linux-image-cloud-amd64/bookworm, or debian:cloud/trixie)"
            );
        }
        if !valid(suite, "-") {
            bail!("`{s}`: `{suite}` is not a Debian suite (bookworm, bookworm-backports, trixie, trixie-backports, sid)");
        }
        Ok(KernelSpec::Debian {
            package,
            suite: suite.to_owned(),
        })
    }

    /// Short, human name for messages.
    pub fn label(&self) -> String {
        match self {
            KernelSpec::File(p) => p.display().to_string(),
            KernelSpec::Debian { package, suite } => format!("debian:{package}/{suite}"),
        }
    }
}

/// `cloud` and `generic` stand for the flavour's metapackage (resolved to the
/// suite's newest kernel).
fn expand_alias(package: &str) -> String {
    match package {
        "cloud" => "linux-image-cloud-amd64".to_owned(),
        "generic" | "amd64" => "linux-image-amd64".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_packages_and_aliases() {
        assert_eq!(
            KernelSpec::parse("build/arch/x86/boot/bzImage").unwrap(),
            KernelSpec::File("build/arch/x86/boot/bzImage".into())
        );
        assert_eq!(
            KernelSpec::parse("debian:linux-image-6.1.0-37-cloud-amd64-unsigned").unwrap(),
            KernelSpec::Debian {
                package: "linux-image-6.1.0-37-cloud-amd64-unsigned".into(),
                suite: "bookworm".into()
            }
        );
        assert_eq!(
            KernelSpec::parse("debian:cloud/trixie-backports").unwrap(),
            KernelSpec::Debian {
                package: "linux-image-cloud-amd64".into(),
                suite: "trixie-backports".into()
            }
        );
        assert_eq!(
            KernelSpec::parse("debian:generic/trixie").unwrap().label(),
            "debian:linux-image-amd64/trixie"
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert!(KernelSpec::parse("debian:Linux Image").is_err());
        assert!(KernelSpec::parse("debian:cloud/").is_err());
        assert!(KernelSpec::parse("").is_err());
    }
}
