//! Older kernels (6.1, measured under `faultlab vm`) print the kfree_skb
//! `location` as a pointer (`%p`) rather than `function+off/len` (`%pS`, as 6.12+
//! do). Booted with `no_hash_pointers`, the raw address can be turned back into a
//! function name through /proc/kallsyms.

/// Sorted (address, function) pairs of the running kernel's text symbols.
pub struct Kallsyms {
    symbols: Vec<(u64, String)>,
}

/// A loaded module, from /proc/modules (`name size refs deps state address`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Module {
    name: String,
    base: u64,
    size: u64,
}

fn parse_modules(text: &str) -> Vec<Module> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let base = w.get(5)?.strip_prefix("0x")?;
            Some(Module {
                name: w.first()?.to_string(),
                size: w.get(1)?.parse().ok()?,
                base: u64::from_str_radix(base, 16).ok()?,
            })
        })
        .collect()
}

/// Whether symbols read while `then` were loaded still name every address of `addrs`
/// correctly with `now` loaded: each address either lies in no module (the kernel's
/// own text does not move) or in a module that was already there at the same place.
/// Module use counts, which change with every namespace, do not matter. Without
/// addresses in /proc/modules (hidden from this reader), any change counts.
fn still_valid(then: &[Module], now: &[Module], addrs: &[u64]) -> bool {
    if now.iter().any(|m| m.base == 0) {
        let names = |v: &[Module]| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        return names(then) == names(now);
    }
    addrs.iter().all(|&a| {
        now.iter()
            .find(|m| a >= m.base && a < m.base + m.size)
            .is_none_or(|m| then.contains(m))
    })
}

impl Kallsyms {
    /// The running kernel's symbols, good for `addrs`: read once per process and again
    /// only when one of the addresses lies in a module loaded since (/proc/modules is
    /// small; /proc/kallsyms is some 200,000 lines: 0.5 s per cell to parse in a debug
    /// build, about 1 s under TCG, where a modular kernel loads modules for the first
    /// cells and every namespace changes the modules' use counts).
    pub fn covering(addrs: &[u64]) -> Option<std::sync::Arc<Kallsyms>> {
        type Cached = Option<(Vec<Module>, Option<std::sync::Arc<Kallsyms>>)>;
        static CACHE: std::sync::Mutex<Cached> = std::sync::Mutex::new(None);
        let modules = parse_modules(&std::fs::read_to_string("/proc/modules").unwrap_or_default());
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        match &*cache {
            Some((m, k)) if still_valid(m, &modules, addrs) => k.clone(),
            _ => {
                let k = Kallsyms::load().map(std::sync::Arc::new);
                *cache = Some((modules, k.clone()));
                k
            }
        }
    }

    pub fn load() -> Option<Kallsyms> {
        let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
        let k = Kallsyms::parse(&text);
        (!k.symbols.is_empty()).then_some(k)
    }

    pub fn parse(text: &str) -> Kallsyms {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let addr = u64::from_str_radix(w.next()?, 16).ok()?;
                let kind = w.next()?;
                let name = w.next()?;
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_string()))
            })
            .collect();
        symbols.sort();
        Kallsyms { symbols }
    }

    /// The function containing `addr` (the nearest text symbol at or below it).
    pub fn function_at(&self, addr: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|(a, _)| *a <= addr);
        i.checked_sub(1).map(|i| self.symbols[i].1.as_str())
    }
}

/// `ffffffffc0354650` or `0xffffffffc0354650` → the address; a symbol name → None.
pub fn raw_address(location: &str) -> Option<u64> {
    let hex = location.strip_prefix("0x").unwrap_or(location);
    (hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_addresses_to_functions() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\n\
             ffffffffc0354000 t nft_do_chain\t[nf_tables]\n\
             ffffffffc0354800 t nft_immediate_eval\t[nf_tables]\n\
             ffffffffc0360000 d some_data\t[nf_tables]\n",
        );
        assert_eq!(k.function_at(0xffffffffc0354650), Some("nft_do_chain"));
        assert_eq!(
            k.function_at(0xffffffffc0354800),
            Some("nft_immediate_eval")
        );
        assert_eq!(k.function_at(0x10), None);
        assert_eq!(raw_address("ffffffffc0354650"), Some(0xffffffffc0354650));
        assert_eq!(raw_address("0xffffffffc0354650"), Some(0xffffffffc0354650));
        assert_eq!(raw_address("nft_do_chain"), None);
        assert_eq!(raw_address("dead"), None);
    }

    #[test]
    fn symbols_are_read_again_only_for_an_address_in_a_new_module() {
        let then = parse_modules(
            "nf_conntrack 196608 5 nf_nat, Live 0xffffffffc0a00000\n\
             nf_tables 368640 1 - Live 0xffffffffc0b00000\n",
        );
        // Use counts changed, a module was loaded after: addresses in the kernel and
        // in the old modules keep their names.
        let now = parse_modules(
            "nf_conntrack 196608 9 nf_nat, Live 0xffffffffc0a00000\n\
             nf_tables 368640 3 - Live 0xffffffffc0b00000\n\
             sctp 450560 2 - Live 0xffffffffc0c00000\n",
        );
        assert_eq!(now.len(), 3);
        assert_eq!((now[2].base, now[2].size), (0xffffffffc0c00000, 450560));
        assert!(still_valid(
            &then,
            &now,
            &[0xffffffff81234567, 0xffffffffc0a00100]
        ));
        assert!(!still_valid(&then, &now, &[0xffffffffc0c00010]));
        // A module reloaded elsewhere.
        let moved = parse_modules("nf_tables 368640 1 - Live 0xffffffffc0d00000\n");
        assert!(!still_valid(&then, &moved, &[0xffffffffc0d00010]));
        // Hidden addresses: only the same list of modules is still valid.
        let hidden = parse_modules("nf_conntrack 196608 5 - Live 0x0000000000000000\n");
        assert!(still_valid(&hidden, &hidden, &[0xffffffffc0a00100]));
        assert!(!still_valid(&then, &hidden, &[0x1]));
    }
}
