//! Older kernels (6.1, measured under `faultlab vm`) print the kfree_skb
//! `location` as a pointer (`%p`) rather than `function+off/len` (`%pS`, as 6.12+
//! do). Booted with `no_hash_pointers`, the raw address can be turned back into a
//! function name through /proc/kallsyms.

/// Sorted (address, function) pairs of the running kernel's text symbols.
pub struct Kallsyms {
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    /// The running kernel's symbols, read once per process and again only when the
    /// loaded modules changed (/proc/modules is small; /proc/kallsyms is some 200,000
    /// lines, which took 0.5 s per cell to parse in a debug build).
    pub fn current() -> Option<std::sync::Arc<Kallsyms>> {
        type Cached = Option<(String, Option<std::sync::Arc<Kallsyms>>)>;
        static CACHE: std::sync::Mutex<Cached> = std::sync::Mutex::new(None);
        let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        match &*cache {
            Some((m, k)) if *m == modules => k.clone(),
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
}
