//! Marker lines the guest prints on the serial console, and their parser.
//! Each run has its own nonce, so program output cannot fake a marker.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// The kernel is up and the init script runs; carries `uname -r`.
    Booted(String),
    /// The command is about to start (end of boot time).
    Start,
    /// The command ended with this status.
    Exit(i32),
    /// The guest could not set itself up; carries what failed.
    Infra(String),
    /// The modules loaded when the command ended (/proc/modules).
    Modules(Vec<String>),
    /// A progress event of the command (`runner::progress::Markers`).
    Progress(crate::runner::progress::Event),
}

pub fn prefix(nonce: &str) -> String {
    format!("@@FAULTLAB:{nonce}:")
}

/// A marker anywhere in a console line (kernel messages may precede it on the line).
pub fn parse(line: &str, nonce: &str) -> Option<Marker> {
    let p = prefix(nonce);
    let at = line.find(&p)?;
    let rest = line[at + p.len()..].trim_end_matches(['\r', '\n']);
    let (word, arg) = match rest.split_once(' ') {
        Some((w, a)) => (w, a.trim()),
        None => (rest.trim(), ""),
    };
    match word {
        "BOOTED" => Some(Marker::Booted(arg.to_owned())),
        "START" => Some(Marker::Start),
        "EXIT" => arg.parse().ok().map(Marker::Exit),
        "INFRA" => Some(Marker::Infra(arg.to_owned())),
        "MODULES" => Some(Marker::Modules(
            arg.split_whitespace().map(str::to_owned).collect(),
        )),
        "PROGRESS" => crate::runner::progress::parse_marker(arg).map(Marker::Progress),
        _ => None,
    }
}

/// Console bytes → text lines: CR dropped, invalid UTF-8 replaced.
pub fn clean_line(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_end_matches(['\r', '\n'])
        .replace('\r', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_marker() {
        let n = "1a2b";
        assert_eq!(
            parse("@@FAULTLAB:1a2b:BOOTED 6.1.0-37-cloud-amd64\r", n),
            Some(Marker::Booted("6.1.0-37-cloud-amd64".into()))
        );
        assert_eq!(parse("@@FAULTLAB:1a2b:START", n), Some(Marker::Start));
        assert_eq!(parse("@@FAULTLAB:1a2b:EXIT 4", n), Some(Marker::Exit(4)));
        assert_eq!(
            parse("@@FAULTLAB:1a2b:MODULES nf_tables  veth", n),
            Some(Marker::Modules(vec!["nf_tables".into(), "veth".into()]))
        );
        assert_eq!(
            parse("@@FAULTLAB:1a2b:MODULES", n),
            Some(Marker::Modules(vec![]))
        );
        assert_eq!(
            parse("@@FAULTLAB:1a2b:INFRA cannot mount the host root", n),
            Some(Marker::Infra("cannot mount the host root".into()))
        );
    }

    #[test]
    fn finds_markers_after_kernel_noise_and_ignores_other_nonces() {
        assert_eq!(
            parse("[    3.1] random: crng init done@@FAULTLAB:n1:EXIT 0", "n1"),
            Some(Marker::Exit(0))
        );
        assert_eq!(parse("@@FAULTLAB:other:EXIT 0", "n1"), None);
        assert_eq!(parse("@@FAULTLAB:n1:EXIT zero", "n1"), None);
        assert_eq!(parse("plain output", "n1"), None);
        assert_eq!(parse("@@FAULTLAB:n1:PROGRESS {not json", "n1"), None);
        assert_eq!(
            parse(
                r#"@@FAULTLAB:n1:PROGRESS {"event":"planned","cells":7}"#,
                "n1"
            ),
            Some(Marker::Progress(crate::runner::progress::Event::Planned {
                cells: 7
            }))
        );
    }

    #[test]
    fn cleans_console_lines() {
        assert_eq!(clean_line(b"abc\r\n"), "abc");
        assert_eq!(clean_line(b"a\rb\xff\n"), "ab\u{fffd}");
    }
}
