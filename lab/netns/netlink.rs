//! Typed rtnetlink operations on ONE namespace.
//!
//! A netlink socket belongs to the namespace it was opened in, so a [`Netlink`] must be
//! opened on a thread that is already inside the namespace ([`Netlink::open_here`], or
//! [`with_netlink`] which does both). It drives rtnetlink on a private current-thread
//! tokio runtime; its methods block.

use crate::model::{MacvlanMode, RouteKind, RoutePlan};
use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{InfoMacVlan, MacVlanMacAddressMode, MacVlanMode};
use netlink_packet_route::route::{RouteScope, RouteType};
use netlink_packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkDummy, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVrf,
    LinkVxlan, RouteMessageBuilder, RouteNextHopBuilder,
};
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// An rtnetlink connection bound to the namespace of the thread that opened it.
pub struct Netlink {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) handle: Handle,
    /// Namespace name, for error messages.
    netns: String,
}

/// Parameters of a vxlan device (`ip link add ... type vxlan ...`).
#[derive(Debug, Clone, Copy, Default)]
pub struct VxlanSpec<'a> {
    pub vni: u32,
    pub local: Option<IpAddr>,
    pub remote: Option<IpAddr>,
    /// Underlay device.
    pub dev: Option<&'a str>,
    /// UDP destination port.
    pub port: u16,
}

/// The kernel lacks what an operation needs: no driver for a device kind (creating one
/// was refused with EOPNOTSUPP, "Unknown device type": the option is not set and no
/// module loads), or no policy routing for a family (a rule refused with EAFNOSUPPORT).
/// Kept as a typed error inside the `anyhow` chain so a runner can make the cell a
/// skip (see `setup::node::missing_feature`).
#[derive(Debug, thiserror::Error)]
#[error("this kernel has no {what} ({kconfig} is not set)")]
pub struct MissingFeature {
    /// What is missing, as the reason says it: "`vrf` devices", "`ip -6 rule` policy routing".
    pub what: String,
    /// The kernel option that provides it (`CONFIG_NET_VRF`).
    pub kconfig: String,
    #[source]
    pub(crate) source: rtnetlink::Error,
}

impl MissingFeature {
    /// One line for a skip: "kernel has no `vrf` devices (CONFIG_NET_VRF)".
    pub fn reason(&self) -> String {
        format!("kernel has no {} ({})", self.what, self.kconfig)
    }
}

/// Options every created link may take: MTU and MAC (IFLA_MTU, IFLA_ADDRESS).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkOpts<'a> {
    pub mtu: Option<u32>,
    /// `aa:bb:cc:dd:ee:ff`; `None` leaves the kernel's choice.
    pub mac: Option<&'a str>,
}

impl LinkOpts<'_> {
    fn apply<T>(&self, mut b: LinkMessageBuilder<T>) -> Result<LinkMessageBuilder<T>> {
        if let Some(m) = self.mtu {
            b = b.mtu(m);
        }
        if let Some(mac) = self.mac {
            b = b.address(parse_mac(mac)?.to_vec());
        }
        Ok(b)
    }
}

/// Runs `f` with a [`Netlink`] on a fresh thread inside the namespace `netns`.
pub fn with_netlink<T: Send>(
    netns: &str,
    f: impl FnOnce(&Netlink) -> Result<T> + Send,
) -> Result<T> {
    super::run_in(netns, || {
        let nl = Netlink::open_here(netns)?;
        f(&nl)
    })
}

/// The errno of a netlink NACK.
pub fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("invalid MAC address `{s}` (want aa:bb:cc:dd:ee:ff)");
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            bail!("invalid MAC address `{s}` (want aa:bb:cc:dd:ee:ff)");
        }
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| anyhow!("invalid MAC address `{s}` (want aa:bb:cc:dd:ee:ff)"))?;
    }
    Ok(mac)
}

impl Netlink {
    /// Opens a connection in the CURRENT thread's namespace. `netns` only labels errors.
    pub fn open_here(netns: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("tokio runtime for rtnetlink")?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().context("open rtnetlink socket")?;
            tokio::spawn(conn);
            anyhow::Ok(handle)
        })?;
        Ok(Netlink {
            rt,
            handle,
            netns: netns.to_string(),
        })
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub(crate) fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, rtnetlink::Error>>,
    ) -> Result<T> {
        self.rt.block_on(fut).map_err(|e| anyhow!(e))
    }

    /// (index, name) of every link in the namespace.
    pub fn links(&self) -> Result<Vec<(u32, String)>> {
        let msgs: Vec<_> = self
            .run(self.handle.link().get().execute().try_collect())
            .with_context(|| format!("list links in netns `{}`", self.netns))?;
        Ok(msgs
            .into_iter()
            .map(|m| {
                let name = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                (m.header.index, name)
            })
            .collect())
    }

    /// Names of the links that are up but not yet running (no carrier yet).
    /// Bridges are left out: a port forwards as soon as its own carrier event
    /// is processed, but the bridge's own carrier event is not "urgent" for
    /// linkwatch (its iflink is itself) and may lag up to a second
    /// (net/core/link_watch.c, linkwatch_urgent_event).
    pub fn links_not_running(&self) -> Result<Vec<String>> {
        use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo};
        let msgs: Vec<_> = self
            .run(self.handle.link().get().execute().try_collect())
            .with_context(|| format!("list links in netns `{}`", self.netns))?;
        Ok(msgs
            .into_iter()
            .filter(|m| {
                m.header.flags.contains(LinkFlags::Up)
                    && !m.header.flags.contains(LinkFlags::Running)
            })
            .filter(|m| {
                !m.attributes.iter().any(|a| {
                    matches!(a, LinkAttribute::LinkInfo(infos)
                        if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))))
                })
            })
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    /// Interface index of `dev`.
    pub fn link_index(&self, dev: &str) -> Result<u32> {
        let name = dev.to_string();
        let found = self.rt.block_on(async {
            let mut s = self.handle.link().get().match_name(name).execute();
            s.try_next().await
        });
        match found {
            Ok(Some(m)) => Ok(m.header.index),
            Ok(None) | Err(_) => Err(anyhow!(
                "no device `{dev}` in netns `{}` (is it created by a link or device of this node?)",
                self.netns
            )),
        }
    }

    /// Creates a link of `kind`; `kconfig` names the kernel option behind the kind: a
    /// kernel without it fails with a [`MissingFeature`] in the chain.
    fn add_link(
        &self,
        what: &str,
        (kind, kconfig): (&str, &str),
        msg: netlink_packet_route::link::LinkMessage,
    ) -> Result<()> {
        self.rt
            .block_on(self.handle.link().add(msg).execute())
            .map_err(|e| {
                if errno_of(&e) == Some(libc::EOPNOTSUPP) {
                    anyhow::Error::new(MissingFeature {
                        what: format!("`{kind}` devices"),
                        kconfig: kconfig.to_string(),
                        source: e,
                    })
                } else {
                    anyhow!(e)
                }
            })
            .with_context(|| format!("create {what} in netns `{}`", self.netns))
    }

    /// Creates veth `name` here with its peer `peer` created directly inside the
    /// namespace `peer_netns` (IFLA_NET_NS_FD on the peer; nothing is moved afterwards).
    /// `indexes` fixes both ends' ifindex: see `Lab`'s veth numbering. `macs` are the
    /// ends' MACs (`name`'s, `peer`'s), set in the same request.
    pub fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_netns: &str,
        mtu: Option<u32>,
        indexes: Option<(u32, u32)>,
        macs: (Option<&str>, Option<&str>),
    ) -> Result<()> {
        let peer_ns = super::open(peer_netns)?;
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .setns_by_fd(peer_ns.as_raw_fd());
        let peer_msg = LinkOpts { mtu, mac: macs.1 }.apply(peer_msg)?;
        let mut peer_built = peer_msg.build();
        if let Some((_, peer_index)) = indexes {
            peer_built.header.index = peer_index;
        }
        let b =
            LinkVeth::new(name, peer).set_info_data(netlink_packet_route::link::InfoData::Veth(
                netlink_packet_route::link::InfoVeth::Peer(peer_built),
            ));
        let mut msg = LinkOpts { mtu, mac: macs.0 }.apply(b)?.build();
        if let Some((index, _)) = indexes {
            msg.header.index = index;
        }
        let res = self.add_link(
            &format!("veth `{name}` with peer `{peer}` in netns `{peer_netns}`"),
            ("veth", "CONFIG_VETH"),
            msg,
        );
        drop(peer_ns);
        res
    }

    /// `ip link add NAME [address MAC] [mtu MTU] type bridge`. A bridge created with a
    /// MAC keeps it (otherwise it takes the lowest of its ports').
    pub fn add_bridge(&self, name: &str, opts: LinkOpts<'_>) -> Result<()> {
        let b = opts.apply(LinkBridge::new(name))?;
        self.add_link(
            &format!("bridge `{name}`"),
            ("bridge", "CONFIG_BRIDGE"),
            b.build(),
        )
    }

    pub fn add_dummy(&self, name: &str, opts: LinkOpts<'_>) -> Result<()> {
        let b = opts.apply(LinkDummy::new(name))?;
        self.add_link(
            &format!("dummy `{name}`"),
            ("dummy", "CONFIG_DUMMY"),
            b.build(),
        )
    }

    /// `ip link add NAME link LINK type macvlan mode MODE [macaddr set SOURCES...]`.
    pub fn add_macvlan(
        &self,
        name: &str,
        link: &str,
        mode: MacvlanMode,
        sources: &[String],
        opts: LinkOpts<'_>,
    ) -> Result<()> {
        let idx = self
            .link_index(link)
            .with_context(|| format!("macvlan `{name}`: its link"))?;
        let m = match mode {
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
            MacvlanMode::Source => MacVlanMode::Source,
        };
        let mut b = LinkMacVlan::new(name, idx, m);
        if !sources.is_empty() {
            let macs = sources
                .iter()
                .map(|s| parse_mac(s).map(InfoMacVlan::MacAddr))
                .collect::<Result<Vec<_>>>()?;
            b = b
                .append_info_data(InfoMacVlan::MacAddrMode(MacVlanMacAddressMode::Set))
                .append_info_data(InfoMacVlan::MacAddrData(macs));
        }
        let b = opts.apply(b)?;
        self.add_link(
            &format!("macvlan `{name}` on `{link}` (mode {})", mode.key()),
            ("macvlan", "CONFIG_MACVLAN"),
            b.build(),
        )
    }

    /// `ip link add NAME type vrf table TABLE`.
    pub fn add_vrf(&self, name: &str, table: u32, opts: LinkOpts<'_>) -> Result<()> {
        let b = opts.apply(LinkVrf::new(name, table))?;
        self.add_link(
            &format!("vrf `{name}` (table {table})"),
            ("vrf", "CONFIG_NET_VRF"),
            b.build(),
        )
    }

    /// `ip link add NAME type vxlan id VNI [local L] [remote R] [dev D] dstport PORT`.
    pub fn add_vxlan(&self, name: &str, spec: &VxlanSpec<'_>, opts: LinkOpts<'_>) -> Result<()> {
        let VxlanSpec {
            vni,
            local,
            remote,
            dev,
            port,
        } = *spec;
        let mut b = LinkVxlan::new(name, vni).port(port);
        if let Some(d) = dev {
            b = b.dev(
                self.link_index(d)
                    .with_context(|| format!("vxlan `{name}` underlay"))?,
            );
        }
        match local {
            Some(IpAddr::V4(a)) => b = b.local(a),
            Some(IpAddr::V6(a)) => b = b.local6(a),
            None => {}
        }
        match remote {
            Some(IpAddr::V4(a)) => b = b.remote(a),
            Some(IpAddr::V6(a)) => b = b.remote6(a),
            None => {}
        }
        let b = opts.apply(b)?;
        self.add_link(
            &format!("vxlan `{name}` (vni {vni}, dstport {port})"),
            ("vxlan", "CONFIG_VXLAN"),
            b.build(),
        )
    }

    fn set_link(&self, what: String, b: LinkMessageBuilder<LinkUnspec>) -> Result<()> {
        self.run(self.handle.link().set(b.build()).execute())
            .with_context(|| format!("{what} in netns `{}`", self.netns))
    }

    /// `ip link set DEV master MASTER`.
    pub fn set_master(&self, dev: &str, master: &str) -> Result<()> {
        let idx = self.link_index(dev)?;
        let m = self.link_index(master)?;
        self.set_link(
            format!("enslave `{dev}` to `{master}`"),
            LinkUnspec::new_with_index(idx).controller(m),
        )
    }

    pub fn set_up(&self, dev: &str) -> Result<()> {
        let idx = self.link_index(dev)?;
        self.set_link(
            format!("set `{dev}` up"),
            LinkUnspec::new_with_index(idx).up(),
        )
    }

    pub fn set_mtu(&self, dev: &str, mtu: u32) -> Result<()> {
        let idx = self.link_index(dev)?;
        self.set_link(
            format!("set mtu {mtu} on `{dev}`"),
            LinkUnspec::new_with_index(idx).mtu(mtu),
        )
    }

    /// `ip addr add ADDR dev DEV`; IPv6 addresses get IFA_F_NODAD (usable at once).
    pub fn add_address(&self, dev: &str, addr: IpNet) -> Result<()> {
        let idx = self.link_index(dev)?;
        let mut req = self
            .handle
            .address()
            .add(idx, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            let m = req.message_mut();
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.run(req.execute())
            .with_context(|| format!("add address {addr} to `{dev}` in netns `{}`", self.netns))
    }

    /// Adds one route of the plan (to the main table unless it names one).
    pub fn add_route(&self, route: &RoutePlan) -> Result<()> {
        let what = || {
            format!(
                "add route {} in netns `{}`",
                describe_route(route),
                self.netns
            )
        };
        let msg = self.route_message(route).with_context(what)?;
        self.run(self.handle.route().add(msg).execute())
            .with_context(what)
    }

    pub(crate) fn route_message(
        &self,
        route: &RoutePlan,
    ) -> Result<netlink_packet_route::route::RouteMessage> {
        let dst = route.dst.trunc();
        let v4 = dst.addr().is_ipv4();
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .map_err(|e| anyhow!("{e}"))?;
        match &route.kind {
            RouteKind::Unicast { via, dev, onlink } => {
                if let Some(d) = dev {
                    b = b.output_interface(self.link_index(d)?);
                }
                match via {
                    Some(gw) => b = b.gateway(*gw).map_err(|e| anyhow!("{e}"))?,
                    // What `ip route add PREFIX dev D` does for IPv4: a directly
                    // connected route has link scope.
                    None if v4 => b = b.scope(RouteScope::Link),
                    None => {}
                }
                if dev.is_none() && via.is_none() {
                    bail!("a unicast route needs `via` or `dev`");
                }
                if *onlink {
                    b = b.onlink();
                }
            }
            RouteKind::Multipath { nexthops } => {
                if nexthops.is_empty() {
                    bail!("a multipath route needs at least one nexthop");
                }
                let family = if v4 {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                };
                let mut hops = Vec::with_capacity(nexthops.len());
                for nh in nexthops {
                    let mut h = RouteNextHopBuilder::new(family);
                    if let Some(d) = &nh.dev {
                        h = h.interface(self.link_index(d)?);
                    }
                    if let Some(gw) = nh.via {
                        h = h.via(gw).map_err(|e| anyhow!("{e}"))?;
                    }
                    // The plan uses `ip route`'s weight (1..); the kernel stores weight - 1.
                    hops.push(h.weight(nh.weight.saturating_sub(1)).build());
                }
                b = b.multipath(hops);
            }
            RouteKind::Blackhole => b = b.kind(RouteType::BlackHole),
            RouteKind::Unreachable => b = b.kind(RouteType::Unreachable),
            RouteKind::Prohibit => b = b.kind(RouteType::Prohibit),
        }
        if let Some(t) = route.table {
            b = b.table_id(t);
        }
        Ok(b.build())
    }

    /// `ip neigh add IP lladdr MAC dev DEV nud permanent`.
    pub fn add_neighbour(&self, dev: &str, ip: IpAddr, mac: &str) -> Result<()> {
        let lladdr = parse_mac(mac)?;
        let idx = self.link_index(dev)?;
        self.run(
            self.handle
                .neighbours()
                .add(idx, ip)
                .link_layer_address(&lladdr)
                .execute(),
        )
        .with_context(|| {
            format!(
                "add neighbour {ip} lladdr {mac} on `{dev}` in netns `{}`",
                self.netns
            )
        })
    }
}

/// `ip route`-like one-line description of a planned route, for messages.
pub fn describe_route(r: &RoutePlan) -> String {
    let route = describe_route_kind(r);
    match r.table {
        Some(t) => format!("{route} table {t}"),
        None => route,
    }
}

fn describe_route_kind(r: &RoutePlan) -> String {
    match &r.kind {
        RouteKind::Unicast { via, dev, onlink } => {
            let mut s = r.dst.to_string();
            if let Some(v) = via {
                s += &format!(" via {v}");
            }
            if let Some(d) = dev {
                s += &format!(" dev {d}");
            }
            if *onlink {
                s += " onlink";
            }
            s
        }
        RouteKind::Multipath { nexthops } => {
            let mut s = r.dst.to_string();
            for nh in nexthops {
                s += " nexthop";
                if let Some(v) = nh.via {
                    s += &format!(" via {v}");
                }
                if let Some(d) = &nh.dev {
                    s += &format!(" dev {d}");
                }
                s += &format!(" weight {}", nh.weight);
            }
            s
        }
        RouteKind::Blackhole => format!("blackhole {}", r.dst),
        RouteKind::Unreachable => format!("unreachable {}", r.dst),
        RouteKind::Prohibit => format!("prohibit {}", r.dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:0a").unwrap(),
            [2, 0, 0x5e, 0x10, 0, 0x0a]
        );
        assert!(parse_mac("02:00:5e:10:00").is_err());
        assert!(parse_mac("02:00:5e:10:00:zz").is_err());
        assert!(parse_mac("02:00:5e:10:00:100").is_err());
    }

    #[test]
    fn route_descriptions() {
        let r = RoutePlan {
            dst: "10.9.0.0/16".parse().unwrap(),
            kind: RouteKind::Multipath {
                nexthops: vec![
                    crate::model::Nexthop {
                        via: Some("10.0.0.1".parse().unwrap()),
                        dev: None,
                        weight: 1,
                    },
                    crate::model::Nexthop {
                        via: Some("10.0.1.1".parse().unwrap()),
                        dev: Some("eth1".into()),
                        weight: 3,
                    },
                ],
            },
            table: None,
        };
        assert_eq!(
            describe_route(&r),
            "10.9.0.0/16 nexthop via 10.0.0.1 weight 1 nexthop via 10.0.1.1 dev eth1 weight 3"
        );
        let in_vrf = RoutePlan {
            table: Some(10),
            ..r
        };
        assert!(describe_route(&in_vrf).ends_with("weight 3 table 10"));
    }
}
