//! Sysctls: per node and host-global, checked keys, merged in file order.

use super::*;

/// Host-global sysctls a scenario may change in the root namespace (saved and restored).
pub const HOST_GLOBAL_SYSCTLS: &[&str] = &[
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
    "net.netfilter.nf_log_all_netns",
    "net.nf_conntrack_max",
    // net_ratelimit() (net_warn_ratelimited: "nf_conntrack: table full ...") interval/burst.
    "net.core.message_cost",
    "net.core.message_burst",
];

pub(super) fn sysctl_value(cx: &Ctx, field: &str, v: &Spanned<toml::Value>) -> R<String> {
    match v.get_ref() {
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Boolean(b) => Ok(if *b { "1" } else { "0" }.into()),
        other => cx.fail(
            v.span(),
            field,
            format!(
                "a sysctl value must be an integer or a string, not {}",
                other.type_str()
            ),
            "write e.g. 1 or \"4096 87380 6291456\"",
        ),
    }
}

pub(super) fn check_sysctl_key(cx: &Ctx, key: &Spanned<String>, field: &str) -> R<()> {
    let k = key.get_ref();
    let ok = k.starts_with("net.")
        && !k.contains("..")
        && !k.contains('/')
        && k.split('.').all(|s| !s.is_empty());
    if !ok {
        return cx.fail(
            key.span(),
            field,
            format!("`{k}` is not a network sysctl"),
            "write a dotted key under net., e.g. \"net.ipv4.ip_forward\"",
        );
    }
    if HOST_GLOBAL_SYSCTLS.contains(&k.as_str()) {
        return cx.fail(
            key.span(),
            field,
            format!("`{k}` is host-global: it is read-only inside a namespace"),
            "set it in the scenario's or cell's [host_sysctls]; it is saved and restored",
        );
    }
    Ok(())
}

pub(super) fn merge_sysctls(
    cx: &Ctx,
    into: &mut Vec<Sysctl>,
    map: &SysctlMap,
    field: &str,
) -> R<()> {
    merge_checked(cx, into, map, field, check_sysctl_key)
}

pub(super) fn merge_host_sysctls(
    cx: &Ctx,
    into: &mut Vec<Sysctl>,
    map: &SysctlMap,
    field: &str,
) -> R<()> {
    merge_checked(cx, into, map, field, |cx, k, f| {
        if HOST_GLOBAL_SYSCTLS.contains(&k.get_ref().as_str()) {
            return Ok(());
        }
        cx.fail(
            k.span(),
            f,
            format!(
                "`{}` is not a host-global sysctl faultlab may change",
                k.get_ref()
            ),
            &format!(
                "per-namespace keys go in nodes.NAME.sysctls; host-global ones allowed here: {}",
                HOST_GLOBAL_SYSCTLS.join(", ")
            ),
        )
    })
}

/// Later values of a key replace earlier ones in place; new keys keep file order.
pub(super) fn merge_checked(
    cx: &Ctx,
    into: &mut Vec<Sysctl>,
    map: &SysctlMap,
    field: &str,
    check: impl Fn(&Ctx, &Spanned<String>, &str) -> R<()>,
) -> R<()> {
    for (k, v) in map {
        let f = format!("{field}.\"{}\"", k.get_ref());
        check(cx, k, &f)?;
        let value = sysctl_value(cx, &f, v)?;
        match into.iter_mut().find(|s| &s.key == k.get_ref()) {
            Some(s) => s.value = value,
            None => into.push(Sysctl {
                key: k.get_ref().clone(),
                value,
            }),
        }
    }
    Ok(())
}
