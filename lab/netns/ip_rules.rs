//! Policy routing rules over rtnetlink (RTM_NEWRULE / RTM_DELRULE): `ip rule add` and
//! `ip rule del` in the namespace of a [`Netlink`].

use super::netlink::{errno_of, MissingFeature, Netlink};
use crate::model::{IpRuleAction, IpRulePlan};
use anyhow::{anyhow, Context, Result};
use netlink_packet_route::rule::{
    RuleAction, RuleAttribute, RuleFlags, RuleMessage, RulePortRange, RuleUidRange,
};
use netlink_packet_route::{AddressFamily, IpProtocol};

/// The request `ip rule add` sends for this rule (iproute2's iprule_modify): a table
/// above 255 goes in FRA_TABLE with the header's table unset.
pub fn rule_message(r: &IpRulePlan) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if r.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let attrs = &mut m.attributes;
    m.header.action = match r.action {
        IpRuleAction::Lookup(t) => {
            match u8::try_from(t) {
                Ok(small) => m.header.table = small,
                Err(_) => attrs.push(RuleAttribute::Table(t)),
            }
            RuleAction::ToTable
        }
        IpRuleAction::Blackhole => RuleAction::Blackhole,
        IpRuleAction::Unreachable => RuleAction::Unreachable,
        IpRuleAction::Prohibit => RuleAction::Prohibit,
    };
    if r.not {
        m.header.flags |= RuleFlags::Invert;
    }
    if let Some(p) = r.priority {
        attrs.push(RuleAttribute::Priority(p));
    }
    if let Some(from) = r.from {
        m.header.src_len = from.prefix_len();
        attrs.push(RuleAttribute::Source(from.addr()));
    }
    if let Some(to) = r.to {
        m.header.dst_len = to.prefix_len();
        attrs.push(RuleAttribute::Destination(to.addr()));
    }
    // Without FRA_FWMASK the kernel takes the whole mark (fib_nl2rule).
    if let Some(mark) = r.fwmark {
        attrs.push(RuleAttribute::FwMark(mark));
    }
    if let Some(mask) = r.fwmask {
        attrs.push(RuleAttribute::FwMask(mask));
    }
    if let Some(t) = r.tos {
        m.header.tos = t;
    }
    if let Some((start, end)) = r.uidrange {
        attrs.push(RuleAttribute::UidRange(RuleUidRange { start, end }));
    }
    if let Some(d) = &r.iif {
        attrs.push(RuleAttribute::Iifname(d.clone()));
    }
    if let Some(d) = &r.oif {
        attrs.push(RuleAttribute::Oifname(d.clone()));
    }
    if let Some(p) = r.ipproto {
        attrs.push(RuleAttribute::IpProtocol(IpProtocol::from(p)));
    }
    if let Some((start, end)) = r.sport {
        attrs.push(RuleAttribute::SourcePortRange(RulePortRange { start, end }));
    }
    if let Some((start, end)) = r.dport {
        attrs.push(RuleAttribute::DestinationPortRange(RulePortRange {
            start,
            end,
        }));
    }
    if let Some(n) = r.suppress_prefixlength {
        attrs.push(RuleAttribute::SuppressPrefixLen(n));
    }
    m
}

impl Netlink {
    /// `ip [-6] rule add ...`. A kernel without policy routing for the family
    /// (fib_nl_newrule finds no rules ops: EAFNOSUPPORT) fails with a [`MissingFeature`].
    pub fn add_ip_rule(&self, r: &IpRulePlan) -> Result<()> {
        let mut req = self.handle.rule().add();
        *req.message_mut() = rule_message(r);
        self.rt
            .block_on(req.execute())
            .map_err(|e| missing_policy_routing(r, e))
            .with_context(|| format!("add ip rule `{r}` in netns `{}`", self.netns()))
    }

    /// `ip [-6] rule del ...`: the rule with these selectors and action.
    pub fn delete_ip_rule(&self, r: &IpRulePlan) -> Result<()> {
        self.rt
            .block_on(self.handle.rule().del(rule_message(r)).execute())
            .map_err(|e| missing_policy_routing(r, e))
            .with_context(|| format!("delete ip rule `{r}` in netns `{}`", self.netns()))
    }
}

fn missing_policy_routing(r: &IpRulePlan, e: rtnetlink::Error) -> anyhow::Error {
    if errno_of(&e) != Some(libc::EAFNOSUPPORT) {
        return anyhow!(e);
    }
    let (what, kconfig) = if r.v6 {
        ("`ip -6 rule` policy routing", "CONFIG_IPV6_MULTIPLE_TABLES")
    } else {
        ("`ip rule` policy routing", "CONFIG_IP_MULTIPLE_TABLES")
    };
    anyhow::Error::new(MissingFeature {
        what: what.into(),
        kconfig: kconfig.into(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_what_ip_rule_sends() {
        let m = rule_message(&IpRulePlan {
            from: Some("10.0.2.0/24".parse().unwrap()),
            priority: Some(10),
            ..IpRulePlan::lookup(100)
        });
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!((m.header.table, m.header.src_len), (100, 24));
        assert_eq!(m.header.action, RuleAction::ToTable);
        assert!(m.attributes.contains(&RuleAttribute::Priority(10)));
        assert!(m
            .attributes
            .contains(&RuleAttribute::Source("10.0.2.0".parse().unwrap())));

        let m = rule_message(&IpRulePlan {
            not: true,
            fwmark: Some(0xca6c),
            ..IpRulePlan::lookup(51820)
        });
        assert_eq!(m.header.table, 0, "a table above 255 goes in FRA_TABLE");
        assert!(m.attributes.contains(&RuleAttribute::Table(51820)));
        assert!(m.header.flags.contains(RuleFlags::Invert));
        assert!(m.attributes.contains(&RuleAttribute::FwMark(0xca6c)));
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RuleAttribute::FwMask(_))));

        let m = rule_message(&IpRulePlan {
            v6: true,
            ipproto: Some(17),
            dport: Some((53, 54)),
            action: IpRuleAction::Prohibit,
            ..IpRulePlan::lookup(1)
        });
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!((m.header.action, m.header.table), (RuleAction::Prohibit, 0));
        assert!(m
            .attributes
            .contains(&RuleAttribute::DestinationPortRange(RulePortRange {
                start: 53,
                end: 54
            })));
        assert!(m
            .attributes
            .contains(&RuleAttribute::IpProtocol(IpProtocol::Udp)));

        let m = rule_message(&IpRulePlan {
            suppress_prefixlength: Some(0),
            ..IpRulePlan::lookup(crate::model::ip_rule::TABLE_MAIN)
        });
        assert_eq!(m.header.table, 254);
        assert!(m.attributes.contains(&RuleAttribute::SuppressPrefixLen(0)));
    }
}
