//! Root-only: capture filters (tcpdump's language, compiled by libpcap through
//! `faultlab::model::PcapFilter`) are fuzzed: mutations of real tcpdump filters
//! (byte flips, deletions, duplications, token insertions, truncation) never panic
//! the wrapper, a rejection always carries libpcap's message, and an accepted filter
//! runs on random frames of any length (including empty and truncated ones) without
//! reading past them.
//!
//! libpcap resolves names it does not know as host names (`host foo`, a mutated
//! `10.0.0.x`), which would send DNS queries from the host: the fuzzing thread
//! first moves into a network namespace of its own with no interfaces
//! (unshare(CLONE_NEWNET) acts on the calling thread only), so every lookup fails
//! at once and nothing leaves the machine.
//!
//! `cargo test --features lab --test lab_fuzz_capture_filter` runs a CI-sized
//! sweep; FAULTLAB_FUZZ_CASES sets the number of inputs, FAULTLAB_FUZZ_SEED the seed.
#![cfg(feature = "lab")]

mod support_fuzz;

use faultlab::model::pcap_filter::{LinkType, PcapFilter};

const SEEDS: &[&str] = &[
    "tcp port 80",
    "src host 10.0.0.1 and dst net 192.168.0.0/16",
    "udp and portrange 1000-2000",
    "tcp[tcpflags] & tcp-rst != 0",
    "icmp and icmp[icmptype] == icmp-redirect",
    "vlan 10 and udp",
    "len > 100 or greater 64 or less 32",
    "ip6 and not ip6 multicast",
    "ether src 02:00:00:00:aa:01",
    "arp or (ip proto 47)",
    "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
    "udp dst port 53 and udp[10] & 0x80 == 0",
];

const TOKENS: &[&str] = &[
    " and ",
    " or ",
    " not ",
    "(",
    ")",
    "[",
    "]",
    "tcp",
    "udp",
    "icmp",
    "ip6",
    "port",
    "src",
    "dst",
    "net",
    "/",
    ":",
    "&",
    "==",
    "!=",
    "0x",
    "vlan",
    "len",
    "-",
    "\\",
    "'",
    "\"",
    "\u{0}",
    "é",
    "99999999999",
];

fn mutate(rng: &mut support_fuzz::Rng, s: &str) -> String {
    let mut b: Vec<u8> = s.as_bytes().to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(b.len() + 1);
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let end = (at + 1 + rng.below(6)).min(b.len());
                b.drain(at.min(end)..end);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(at..at, t.bytes());
            }
            3 => {
                let end = (at + rng.below(8)).min(b.len());
                let dup: Vec<u8> = b[at..end].to_vec();
                b.splice(at..at, dup);
            }
            _ => b.truncate(at),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn mutated_tcpdump_filters_never_panic_and_rejections_say_why() {
    let cases = support_fuzz::cases(3000);
    let seed = support_fuzz::seed(0x5eed_0bcf);
    eprintln!("FAULTLAB_FUZZ_SEED={seed}");
    let t0 = std::time::Instant::now();
    let worker = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) for the fuzzing thread (needs root)");
        let mut rng = support_fuzz::Rng::new(seed);
        let (mut accepted, mut rejected, mut matched) = (0u64, 0u64, 0u64);
        for n in 0..cases {
            let seed_text = SEEDS[rng.below(SEEDS.len())];
            let text = mutate(&mut rng, seed_text);
            let link = if n % 2 == 0 {
                LinkType::Ethernet
            } else {
                LinkType::LinuxSll
            };
            match PcapFilter::compile(&text, link) {
                Ok(f) => {
                    accepted += 1;
                    for _ in 0..4 {
                        let len = rng.below(120);
                        let frame: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                        matched += u64::from(f.matches(&frame, len as u32 + rng.below(64) as u32));
                    }
                }
                Err(why) => {
                    rejected += 1;
                    assert!(
                        !why.trim().is_empty(),
                        "{text:?}: rejected without a message"
                    );
                }
            }
        }
        (accepted, rejected, matched)
    });
    let (accepted, rejected, matched) = worker.join().expect("the fuzzing thread panicked");
    eprintln!(
        "{cases} filters in {:.1} s: {accepted} accepted ({matched} random-frame matches), \
         {rejected} rejected with libpcap's message, 0 panics",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        accepted > 0 && rejected > 0,
        "the mutations must reach both sides"
    );
}
