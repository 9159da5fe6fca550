//! Kernel releases (`uname -r`) and the version ranges cells use to pick expectations.

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel version `{input}`: {msg}")]
pub struct KernelError {
    pub input: String,
    pub msg: String,
}

fn kerr(input: &str, msg: impl Into<String>) -> KernelError {
    KernelError {
        input: input.to_owned(),
        msg: msg.into(),
    }
}

/// A running kernel's version. Distribution and local suffixes are kept but do not
/// order: `6.1.0-31-cloud-amd64` is 6.1.0, and `7.2.0-rc3` counts as 7.2.0 (a feature
/// is in from its first rc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// Everything after the numbers: `-fc-v669`, `-31-cloud-amd64`, `-rc3`, `+`.
    pub suffix: String,
}

impl KernelVersion {
    pub fn parse(release: &str) -> Result<Self, KernelError> {
        let release = release.trim();
        let (nums, rest) = leading_numbers(release);
        let nums = nums.map_err(|m| kerr(release, m))?;
        match nums[..] {
            [major, minor] => Ok(KernelVersion {
                major,
                minor,
                patch: 0,
                suffix: rest.to_owned(),
            }),
            [major, minor, patch] => Ok(KernelVersion {
                major,
                minor,
                patch,
                suffix: rest.to_owned(),
            }),
            _ => Err(kerr(release, "expected major.minor[.patch]")),
        }
    }

    fn parts(&self) -> [u32; 3] {
        [self.major, self.minor, self.patch]
    }
}

impl Ord for KernelVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl PartialOrd for KernelVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}{}",
            self.major, self.minor, self.patch, self.suffix
        )
    }
}

/// `1`, `1.2` or `1.2.3` at the start of `s`, and what follows.
fn leading_numbers(s: &str) -> (Result<Vec<u32>, String>, &str) {
    let mut nums = Vec::new();
    let mut rest = s;
    loop {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            let msg = if nums.is_empty() {
                "expected a version number"
            } else {
                "expected a number after '.'"
            };
            return (Err(msg.to_owned()), rest);
        }
        match rest[..digits].parse::<u32>() {
            Ok(n) => nums.push(n),
            Err(_) => return (Err("version number too large".to_owned()), rest),
        }
        rest = &rest[digits..];
        match rest.strip_prefix('.') {
            Some(r) if nums.len() < 3 && r.starts_with(|c: char| c.is_ascii_digit()) => rest = r,
            _ => return (Ok(nums), rest),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A set of kernel versions: comma-separated constraints that must all hold, e.g.
/// `>=5.6`, `<4.19`, `>=4.19, <5.6`, or a bare `6.1` (any 6.1.x).
///
/// Like Cargo's version requirements, a constraint compares only as many components as
/// it spells: `<=6.1` includes 6.1.40, `>6.1` starts at 6.2, `>=5.6` at 5.6.0.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct KernelRange {
    source: String,
    constraints: Vec<(Op, Vec<u32>)>,
}

impl KernelRange {
    pub fn parse(s: &str) -> Result<Self, KernelError> {
        let mut constraints = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(kerr(s, "empty constraint; write e.g. \">=4.19, <5.6\""));
            }
            let (op, rest) = [
                (">=", Op::Ge),
                ("<=", Op::Le),
                ("==", Op::Eq),
                (">", Op::Gt),
                ("<", Op::Lt),
                ("=", Op::Eq),
            ]
            .iter()
            .find_map(|(sym, op)| part.strip_prefix(sym).map(|r| (*op, r.trim_start())))
            .unwrap_or((Op::Eq, part));
            let (nums, tail) = leading_numbers(rest);
            let nums = nums.map_err(|m| kerr(s, format!("{m} in `{part}`")))?;
            if !tail.is_empty() {
                return Err(kerr(
                    s,
                    format!("unexpected `{tail}` in `{part}`; write e.g. \">=5.6\""),
                ));
            }
            constraints.push((op, nums));
        }
        Ok(KernelRange {
            source: s.trim().to_owned(),
            constraints,
        })
    }

    pub fn contains(&self, v: &KernelVersion) -> bool {
        let parts = v.parts();
        self.constraints.iter().all(|(op, want)| {
            let ord = parts[..want.len()].cmp(&want[..]);
            match op {
                Op::Eq => ord == Ordering::Equal,
                Op::Lt => ord == Ordering::Less,
                Op::Le => ord != Ordering::Greater,
                Op::Gt => ord == Ordering::Greater,
                Op::Ge => ord != Ordering::Less,
            }
        })
    }
}

impl fmt::Display for KernelRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl From<KernelRange> for String {
    fn from(r: KernelRange) -> String {
        r.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KernelVersion {
        KernelVersion::parse(s).unwrap()
    }

    fn r(s: &str) -> KernelRange {
        KernelRange::parse(s).unwrap()
    }

    #[test]
    fn releases() {
        let k = v("6.18.44-fc-v669");
        assert_eq!(
            (k.major, k.minor, k.patch, k.suffix.as_str()),
            (6, 18, 44, "-fc-v669")
        );
        let k = v("6.1.0-31-cloud-amd64");
        assert_eq!(
            (k.major, k.minor, k.patch, k.suffix.as_str()),
            (6, 1, 0, "-31-cloud-amd64")
        );
        let k = v("7.2.0-rc3");
        assert_eq!(
            (k.major, k.minor, k.patch, k.suffix.as_str()),
            (7, 2, 0, "-rc3")
        );
        let k = v("7.2-rc3");
        assert_eq!((k.major, k.minor, k.patch), (7, 2, 0));
        assert_eq!(v("5.15.0+").suffix, "+");
        assert_eq!(v("6.8.0-1015-aws").to_string(), "6.8.0-1015-aws");
        assert!(v("6.18.44") > v("6.9.1"));
        assert!(KernelVersion::parse("6").is_err());
        assert!(KernelVersion::parse("linux").is_err());
    }

    #[test]
    fn ranges() {
        assert!(r(">=5.6").contains(&v("6.18.44-fc-v669")));
        assert!(r(">=5.6").contains(&v("5.6.0")));
        assert!(!r(">=5.6").contains(&v("5.4.250")));
        assert!(r("<4.19").contains(&v("4.14.300")));
        assert!(!r("<4.19").contains(&v("4.19.0")));
        let mid = r(">=4.19, <5.6");
        assert!(mid.contains(&v("5.4.0-150-generic")));
        assert!(!mid.contains(&v("5.6.1")));
        assert!(!mid.contains(&v("4.14.1")));
        assert!(r("6.1").contains(&v("6.1.0-31-cloud-amd64")));
        assert!(r("6.1").contains(&v("6.1.129")));
        assert!(!r("6.1").contains(&v("6.10.1")));
        assert!(r("=6").contains(&v("6.18.44")));
        assert!(r("6.1.5").contains(&v("6.1.5")) && !r("6.1.5").contains(&v("6.1.6")));
        assert!(r("<=6.1").contains(&v("6.1.40")));
        assert!(!r(">6.1").contains(&v("6.1.40")) && r(">6.1").contains(&v("6.2.0")));
        assert!(r(">=7.2").contains(&v("7.2.0-rc3")));
        assert_eq!(r(" >=4.19, <5.6 ").to_string(), ">=4.19, <5.6");
    }

    #[test]
    fn range_errors() {
        assert!(KernelRange::parse("").is_err());
        assert!(KernelRange::parse(">=").is_err());
        assert!(KernelRange::parse(">=5.6,").is_err());
        assert!(KernelRange::parse("~5.6").is_err());
        let e = KernelRange::parse(">=5.6x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel version `>=5.6x`: unexpected `x` in `>=5.6x`; write e.g. \">=5.6\""
        );
    }
}
