//! Policy routing rules (`ip rule`): which routing table a route lookup uses, chosen by
//! source, destination, mark, interfaces, protocol and ports. Pure data plus its one
//! canonical `ip rule` spelling, which messages and the shell-script backend share.

use ipnet::IpNet;
use serde::Serialize;

/// The kernel's own tables, by `ip rule`'s names (include/uapi/linux/rtnetlink.h).
pub const TABLE_DEFAULT: u32 = 253;
pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpRulePlan {
    /// An IPv6 rule (`ip -6 rule`); else IPv4.
    pub v6: bool,
    /// `priority N`; the kernel picks one below the first non-zero rule when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// `not`: the selector is inverted (FIB_RULE_INVERT).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<IpNet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<IpNet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    /// The mask of `fwmark N/MASK`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwmask: Option<u32>,
    /// `tos 0x10` (`dsfield`): the header's TOS byte must equal it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tos: Option<u8>,
    /// `uidrange 100-200`: the socket owner's uid (FRA_UID_RANGE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uidrange: Option<(u32, u32)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oif: Option<String>,
    /// IP protocol number (`ipproto tcp` is 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipproto: Option<u8>,
    /// Inclusive port range; one port is `(p, p)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<(u16, u16)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<(u16, u16)>,
    /// `suppress_prefixlength N`: a lookup result with a prefix this short or shorter is
    /// ignored (wg-quick's `table main suppress_prefixlength 0` skips the default route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppress_prefixlength: Option<u32>,
    pub action: IpRuleAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "table", rename_all = "lowercase")]
pub enum IpRuleAction {
    /// `lookup N` (`table N`): FR_ACT_TO_TBL.
    Lookup(u32),
    Blackhole,
    Unreachable,
    Prohibit,
}

impl IpRulePlan {
    /// A rule that selects everything and looks up `table`: the base the parser fills.
    pub fn lookup(table: u32) -> Self {
        IpRulePlan {
            v6: false,
            priority: None,
            not: false,
            from: None,
            to: None,
            fwmark: None,
            fwmask: None,
            tos: None,
            uidrange: None,
            iif: None,
            oif: None,
            ipproto: None,
            sport: None,
            dport: None,
            suppress_prefixlength: None,
            action: IpRuleAction::Lookup(table),
        }
    }

    /// The words after `ip [-6] rule add`, in the order `ip rule show` prints them.
    pub fn args(&self) -> Vec<String> {
        fn pair(a: &mut Vec<String>, k: &str, v: String) {
            a.push(k.to_string());
            a.push(v);
        }
        let mut a: Vec<String> = Vec::new();
        if let Some(p) = self.priority {
            pair(&mut a, "priority", p.to_string());
        }
        if self.not {
            a.push("not".into());
        }
        if let Some(f) = self.from {
            pair(&mut a, "from", f.to_string());
        }
        if let Some(t) = self.to {
            pair(&mut a, "to", t.to_string());
        }
        if let Some(m) = self.fwmark {
            let v = match self.fwmask {
                Some(mask) => format!("{m:#x}/{mask:#x}"),
                None => format!("{m:#x}"),
            };
            pair(&mut a, "fwmark", v);
        }
        if let Some(t) = self.tos {
            pair(&mut a, "tos", format!("{t:#x}"));
        }
        if let Some((lo, hi)) = self.uidrange {
            pair(&mut a, "uidrange", format!("{lo}-{hi}"));
        }
        if let Some(d) = &self.iif {
            pair(&mut a, "iif", d.clone());
        }
        if let Some(d) = &self.oif {
            pair(&mut a, "oif", d.clone());
        }
        if let Some(p) = self.ipproto {
            pair(&mut a, "ipproto", p.to_string());
        }
        for (name, range) in [("sport", self.sport), ("dport", self.dport)] {
            match range {
                Some((lo, hi)) if lo == hi => pair(&mut a, name, lo.to_string()),
                Some((lo, hi)) => pair(&mut a, name, format!("{lo}-{hi}")),
                None => {}
            }
        }
        match self.action {
            IpRuleAction::Lookup(t) => pair(&mut a, "lookup", table_name(t)),
            IpRuleAction::Blackhole => a.push("blackhole".into()),
            IpRuleAction::Unreachable => a.push("unreachable".into()),
            IpRuleAction::Prohibit => a.push("prohibit".into()),
        }
        if let Some(n) = self.suppress_prefixlength {
            pair(&mut a, "suppress_prefixlength", n.to_string());
        }
        a
    }
}

/// `main`, `local`, `default` or the number.
pub fn table_name(t: u32) -> String {
    match t {
        TABLE_MAIN => "main".into(),
        TABLE_LOCAL => "local".into(),
        TABLE_DEFAULT => "default".into(),
        n => n.to_string(),
    }
}

/// `ip rule` spelling: `-6 fwmark 0x1 lookup 100`.
impl std::fmt::Display for IpRulePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.v6 {
            write!(f, "-6 ")?;
        }
        write!(f, "{}", self.args().join(" "))
    }
}
