//! The control steps of a timeline (`configure`, `conntrack`, `wait`, `checkpoint`,
//! `join`, `sleep`, `exec`) resolved against the lab. Their nested tables are re-read from
//! their own text (so the topology's typed specs, such as devices, can be reused);
//! errors therefore point at the step's table and name the field inside it.

use super::*;
use crate::model::ct_filter::{self, CtFilter, CtInsert, CtTuple};

/// The control kinds, typed.
enum ControlSpec {
    Configure(ConfigureSpec),
    Conntrack(ConntrackSpec),
    Wait(WaitSpec),
    /// Its only field, `name`, is the step's name.
    Checkpoint,
    Join(JoinSpec),
    Sleep(SleepSpec),
    Exec(ExecSpec),
}

pub(super) fn control_action(
    cx: &Ctx,
    table: &toml::Table,
    span: Range<usize>,
    field: &str,
    lab: &LabPlan,
    devices: &DeviceSets,
) -> R<Action> {
    let pcx = cx.pinned(span.clone());
    let kind = table.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    // The kind's own struct, read from the table's text: spans (and so the
    // topology's typed specs) survive only a direct `from_str`, not serde's
    // buffering of internally tagged enums.
    let mut fields = table.clone();
    fields.remove("kind");
    let text = toml::to_string(&fields).map_err(|e| {
        pcx.err(
            span.clone(),
            field,
            (e.to_string(), "write the step as a plain table".into()),
        )
    })?;
    fn read<T: serde::de::DeserializeOwned>(
        pcx: &Ctx,
        text: &str,
        span: &Range<usize>,
        field: &str,
    ) -> R<T> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            pcx.err(
                span.clone(),
                field,
                (
                    e.message().to_string(),
                    "see \"Timelines\" in README.md for each step kind's fields".into(),
                ),
            )
        })
    }
    let spec = match kind {
        "configure" => ControlSpec::Configure(read(&pcx, &text, &span, field)?),
        "conntrack" => ControlSpec::Conntrack(read(&pcx, &text, &span, field)?),
        "wait" => ControlSpec::Wait(read(&pcx, &text, &span, field)?),
        "checkpoint" => {
            read::<CheckpointSpec>(&pcx, &text, &span, field)?;
            ControlSpec::Checkpoint
        }
        "join" => ControlSpec::Join(read(&pcx, &text, &span, field)?),
        "exec" => ControlSpec::Exec(read(&pcx, &text, &span, field)?),
        _ => ControlSpec::Sleep(read(&pcx, &text, &span, field)?),
    };
    let node_of = |node: &str| -> R<&NodePlan> {
        lab.node(node).ok_or_else(|| {
            undefined_node(
                &pcx,
                span.clone(),
                &format!("{field}.node"),
                node,
                lab.nodes.iter().map(|n| n.name.as_str()),
            )
        })
    };
    Ok(match spec {
        ControlSpec::Configure(c) => {
            node_of(&c.node)?;
            Action::Configure(configure(&pcx, &c, field, &devices[&c.node])?)
        }
        ControlSpec::Conntrack(c) => {
            node_of(&c.node)?;
            Action::Conntrack(conntrack(&pcx, &c, field)?)
        }
        ControlSpec::Wait(w) => {
            let until = Expectation::parse(&w.until).map_err(|e| {
                pcx.err(
                    span.clone(),
                    &format!("{field}.until"),
                    (
                        format!("`{}`: {e}", w.until),
                        "write a condition over live observations, e.g. \"ct.r.count(proto=udp) >= 1\""
                            .into(),
                    ),
                )
            })?;
            let give_up = w
                .give_up
                .as_ref()
                .map(|g| {
                    Expectation::parse(g).map_err(|e| {
                        pcx.err(
                            span.clone(),
                            &format!("{field}.give_up"),
                            (
                                format!("`{g}`: {e}"),
                                "write a condition over live observations that makes `until` unreachable, e.g. \"ct.r.count(dport=5202 state=ESTABLISHED) == 0\""
                                    .into(),
                            ),
                        )
                    })
                })
                .transpose()?;
            let timeout_ms = w.timeout_ms.unwrap_or(5000);
            let every_ms = w.every_ms.unwrap_or(10);
            if !(1..=600_000).contains(&timeout_ms) || !(1..=60_000).contains(&every_ms) {
                return pcx.fail(
                    span,
                    field,
                    format!("timeout_ms = {timeout_ms} / every_ms = {every_ms} out of range"),
                    "set timeout_ms between 1 and 600000 and every_ms between 1 and 60000",
                );
            }
            Action::Wait(WaitPlan {
                until,
                give_up,
                timeout_ms,
                every_ms,
                on_timeout: w.on_timeout,
            })
        }
        ControlSpec::Checkpoint => Action::Checkpoint,
        ControlSpec::Join(j) => Action::Join {
            steps: j.steps,
            stop: j.stop,
        },
        ControlSpec::Exec(e) => {
            node_of(&e.node)?;
            let argv = syntax::parse_command(&e.run)
                .map_err(|err| pcx.err(span.clone(), &format!("{field}.run"), err))?;
            let timeout_ms = e.timeout_ms.unwrap_or(10_000);
            if !(1..=600_000).contains(&timeout_ms) {
                return pcx.fail(
                    span,
                    &format!("{field}.timeout_ms"),
                    format!("timeout_ms = {timeout_ms} out of range"),
                    "set timeout_ms between 1 and 600000",
                );
            }
            Action::Exec(ExecPlan {
                node: e.node,
                argv,
                expect_exit: e.expect_exit.unwrap_or(0),
                timeout_ms,
                on_failure: e.on_failure,
            })
        }
        ControlSpec::Sleep(SleepSpec { ms, .. }) => {
            if ms > 600_000 {
                return pcx.fail(
                    span,
                    &format!("{field}.ms"),
                    format!("ms = {ms} is over 10 minutes"),
                    "sleep at most 600000 ms; prefer a `wait` on a condition",
                );
            }
            Action::Sleep { ms }
        }
    })
}

fn configure(
    cx: &Ctx,
    c: &ConfigureSpec,
    field: &str,
    existing: &BTreeSet<String>,
) -> R<ConfigurePlan> {
    let node = c.node.as_str();
    let mut plan = ConfigurePlan {
        node: node.to_string(),
        ..Default::default()
    };
    let mut devs = existing.clone();
    for name in c.add_devices.keys() {
        let f = format!("{field}.add_devices.{}", name.get_ref());
        syntax::check_ifname(name.get_ref()).map_err(|e| cx.err(name.span(), &f, e))?;
        if !devs.insert(name.get_ref().clone()) {
            return cx.fail(
                name.span(),
                &f,
                format!("node `{node}` already has a device `{}`", name.get_ref()),
                "pick a new device name",
            );
        }
    }
    for (name, dev) in &c.add_devices {
        let f = format!("{field}.add_devices.{}", name.get_ref());
        plan.add_devices
            .push(expand_device(cx, node, &f, name.get_ref(), dev, &devs)?);
    }
    let known = |d: &Spanned<String>, f: &str| -> R<()> {
        if devs.contains(d.get_ref()) {
            return Ok(());
        }
        cx.fail(
            d.span(),
            f,
            format!("node `{node}` has no device `{}`", d.get_ref()),
            &format!("use one of: {}", join(&devs)),
        )
    };
    for (dev, l) in &c.links {
        let f = format!("{field}.links.{}", dev.get_ref());
        known(dev, &f)?;
        if let Some(mac) = &l.mac {
            syntax::parse_neighbour(&format!("0.0.0.0 lladdr {mac} dev x")).map_err(|_| {
                cx.err(
                    dev.span(),
                    &format!("{f}.mac"),
                    (
                        format!("`{mac}` is not a MAC address"),
                        "write aa:bb:cc:dd:ee:ff".into(),
                    ),
                )
            })?;
        }
        if l.mtu.is_some_and(|m| !(68..=65535).contains(&m)) {
            return cx.fail(
                dev.span(),
                &format!("{f}.mtu"),
                "mtu out of range".into(),
                "set mtu between 68 and 65535",
            );
        }
        plan.links.push(LinkChange {
            dev: dev.get_ref().clone(),
            up: l.up,
            mtu: l.mtu,
            mac: l.mac.as_ref().map(|m| m.to_lowercase()),
        });
    }
    merge_sysctls(
        cx,
        &mut plan.sysctls,
        &c.sysctls,
        &format!("{field}.sysctls"),
    )?;
    for k in &c.flush {
        plan.flush
            .push(ruleset_kind(cx, k, &format!("{field}.flush"))?);
    }
    for (k, text) in &c.replace {
        let kind = ruleset_kind(cx, k, &format!("{field}.replace"))?;
        plan.flush.push(kind);
        plan.load.extend(
            text.texts()
                .into_iter()
                .map(|text| RulesetPlan { kind, text }),
        );
    }
    for (k, text) in &c.load {
        let kind = ruleset_kind(cx, k, &format!("{field}.load"))?;
        plan.load.extend(
            text.texts()
                .into_iter()
                .map(|text| RulesetPlan { kind, text }),
        );
    }
    plan.flush.dedup();
    for (op, list, what) in [
        (Op::Add, &c.routes.add, "add"),
        (Op::Replace, &c.routes.replace, "replace"),
        (Op::Delete, &c.routes.delete, "delete"),
    ] {
        let f = format!("{field}.routes.{what}");
        for r in expand_routes(cx, list, &f, node, &devs)? {
            plan.routes.push(Change { op, what: r });
        }
    }
    for (op, list, what) in [
        (Op::Add, &c.ip_rules.add, "add"),
        (Op::Delete, &c.ip_rules.delete, "delete"),
    ] {
        let f = format!("{field}.ip_rules.{what}");
        for r in expand_ip_rules(cx, list, &f, node, &devs)? {
            plan.ip_rules.push(Change { op, what: r });
        }
    }
    for (op, list, what) in [
        (Op::Add, &c.neighbours.add, "add"),
        (Op::Replace, &c.neighbours.replace, "replace"),
        (Op::Delete, &c.neighbours.delete, "delete"),
    ] {
        for (i, n) in list.iter().enumerate() {
            let f = format!("{field}.neighbours.{what}[{i}]");
            let text = n.get_ref();
            // A delete needs no lladdr: `IP dev DEV`.
            let full = if op == Op::Delete && !text.contains("lladdr") {
                let w: Vec<&str> = text.split_whitespace().collect();
                match w.as_slice() {
                    [ip, "dev", dev] => format!("{ip} lladdr 00:00:00:00:00:00 dev {dev}"),
                    _ => {
                        return cx.fail(
                            n.span(),
                            &f,
                            format!("`{text}` is not a neighbour to delete"),
                            "write `IP dev DEVICE`",
                        )
                    }
                }
            } else {
                text.clone()
            };
            let (ip, mac, dev) =
                syntax::parse_neighbour(&full).map_err(|e| cx.err(n.span(), &f, e))?;
            known_device_at(cx, n.span(), &dev, &f, node, &devs)?;
            plan.neighbours.push(Change {
                op,
                what: NeighbourPlan { dev, ip, mac },
            });
        }
    }
    for d in &c.delete_devices {
        known(d, &format!("{field}.delete_devices"))?;
        plan.delete_devices.push(d.get_ref().clone());
    }
    Ok(plan)
}

fn conntrack(cx: &Ctx, c: &ConntrackSpec, field: &str) -> R<ConntrackPlan> {
    let at = 0..0;
    let filter = match &c.filter {
        None => None,
        Some(f) => Some(CtFilter::parse(f).map_err(|e| {
            cx.err(
                at.clone(),
                &format!("{field}.filter"),
                (e, "see \"Conntrack filters\" in README.md".into()),
            )
        })?),
    };
    let op = match (c.action.as_str(), filter, &c.entry) {
        ("flush", filter, None) => CtOp::Flush { filter },
        ("delete", Some(filter), None) => CtOp::Delete { filter },
        ("delete", None, _) => {
            return cx.fail(
                at,
                &format!("{field}.filter"),
                "a delete needs a filter".into(),
                "add filter = \"proto=udp dport=53\" (or use action = \"flush\" for all entries)",
            )
        }
        ("insert", None, Some(e)) => CtOp::Insert {
            entry: ct_insert(cx, e, &format!("{field}.entry"))?,
        },
        ("insert", _, None) => return cx.fail(
            at,
            &format!("{field}.entry"),
            "an insert needs an entry".into(),
            "add entry = { proto = \"udp\", src = \"...\", dst = \"...\", sport = 1, dport = 2 }",
        ),
        ("flush" | "delete" | "insert", _, _) => {
            return cx.fail(
                at,
                field,
                format!(
                    "action `{}` takes {}",
                    c.action,
                    if c.action == "insert" {
                        "an entry, not a filter"
                    } else {
                        "a filter, not an entry"
                    }
                ),
                "remove the field that does not belong to the action",
            )
        }
        (other, _, _) => {
            return cx.fail(
                at,
                &format!("{field}.action"),
                format!("unknown conntrack action `{other}`"),
                "use flush, delete or insert",
            )
        }
    };
    Ok(ConntrackPlan {
        node: c.node.clone(),
        op,
    })
}

fn ct_insert(cx: &Ctx, e: &CtEntrySpec, field: &str) -> R<CtInsert> {
    let bad = |f: &str, msg: String, fix: &str| {
        cx.fail::<CtInsert>(0..0, &format!("{field}.{f}"), msg, fix)
    };
    let proto = match CtFilter::parse(&format!("proto={}", e.proto)) {
        Ok(_) => match e.proto.as_str() {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "icmpv6" => 58,
            "sctp" => 132,
            "gre" => 47,
            n => n.parse().unwrap_or(0),
        },
        Err(m) => {
            return bad(
                "proto",
                m,
                "use tcp, udp, icmp, icmpv6, sctp, gre or a number",
            )
        }
    };
    if e.src.is_ipv4() != e.dst.is_ipv4() {
        return bad(
            "dst",
            format!("src = {} and dst = {} are different families", e.src, e.dst),
            "use two IPv4 or two IPv6 addresses",
        );
    }
    let orig = CtTuple {
        src: e.src,
        dst: e.dst,
        sport: e.sport,
        dport: e.dport,
    };
    let inverse = orig.inverse(proto);
    let reply = if e.reply_src.is_some()
        || e.reply_dst.is_some()
        || e.reply_sport.is_some()
        || e.reply_dport.is_some()
    {
        Some(CtTuple {
            src: e.reply_src.unwrap_or(inverse.src),
            dst: e.reply_dst.unwrap_or(inverse.dst),
            sport: e.reply_sport.unwrap_or(inverse.sport),
            dport: e.reply_dport.unwrap_or(inverse.dport),
        })
    } else {
        None
    };
    let mut status = 0u32;
    if let Some(list) = &e.status {
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match ct_filter::status_bit(name) {
                Some(bit) => status |= bit,
                None => {
                    return bad(
                        "status",
                        format!("unknown status bit `{name}`"),
                        "use names such as ASSURED, SEEN_REPLY, CONFIRMED",
                    )
                }
            }
        }
    }
    let tcp_state = match &e.state {
        None => None,
        Some(s) => match ct_filter::tcp_state_number(s) {
            Some(n) if proto == 6 => Some(n),
            Some(_) => return bad("state", "state is for tcp entries".into(), "remove state"),
            None => {
                return bad(
                    "state",
                    format!("unknown TCP state `{s}`"),
                    "use e.g. ESTABLISHED, SYN_SENT, TIME_WAIT",
                )
            }
        },
    };
    let mut entry = CtInsert::new(proto, orig, e.timeout.unwrap_or(120));
    entry.reply = reply;
    entry.status = status;
    entry.tcp_state = tcp_state;
    entry.mark = e.mark;
    entry.zone = e.zone;
    Ok(entry)
}
