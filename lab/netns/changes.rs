//! rtnetlink changes a timeline makes to a live lab (the build only adds): route and
//! neighbour replace / delete, link down / MAC, device delete.

use super::netlink::{parse_mac, Netlink};
use crate::model::RoutePlan;
use anyhow::{Context, Result};
use rtnetlink::LinkUnspec;
use std::net::IpAddr;

impl Netlink {
    /// `ip route replace ...`.
    pub fn replace_route(&self, route: &RoutePlan) -> Result<()> {
        let msg = self.route_message(route)?;
        self.run(self.handle.route().add(msg).replace().execute())
            .with_context(|| {
                format!(
                    "replace route {} in netns `{}`",
                    super::netlink::describe_route(route),
                    self.netns()
                )
            })
    }

    /// `ip route del ...`: the route with this destination, type and next hops.
    pub fn delete_route(&self, route: &RoutePlan) -> Result<()> {
        let msg = self.route_message(route)?;
        self.run(self.handle.route().del(msg).execute())
            .with_context(|| {
                format!(
                    "delete route {} in netns `{}`",
                    super::netlink::describe_route(route),
                    self.netns()
                )
            })
    }

    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
    pub fn replace_neighbour(&self, dev: &str, ip: IpAddr, mac: &str) -> Result<()> {
        let lladdr = parse_mac(mac)?;
        let idx = self.link_index(dev)?;
        self.run(
            self.handle
                .neighbours()
                .add(idx, ip)
                .link_layer_address(&lladdr)
                .replace()
                .execute(),
        )
        .with_context(|| {
            format!(
                "replace neighbour {ip} lladdr {mac} on `{dev}` in netns `{}`",
                self.netns()
            )
        })
    }

    /// `ip neigh del IP dev DEV`.
    pub fn delete_neighbour(&self, dev: &str, ip: IpAddr) -> Result<()> {
        let idx = self.link_index(dev)?;
        let mut add = self.handle.neighbours().add(idx, ip);
        let msg = add.message_mut().clone();
        self.run(self.handle.neighbours().del(msg).execute())
            .with_context(|| {
                format!(
                    "delete neighbour {ip} on `{dev}` in netns `{}`",
                    self.netns()
                )
            })
    }

    /// `ip link set DEV down`.
    pub fn set_down(&self, dev: &str) -> Result<()> {
        let idx = self.link_index(dev)?;
        let msg = LinkUnspec::new_with_index(idx).down().build();
        self.run(self.handle.link().set(msg).execute())
            .with_context(|| format!("set `{dev}` down in netns `{}`", self.netns()))
    }

    /// `ip link set DEV address MAC`.
    pub fn set_mac(&self, dev: &str, mac: &str) -> Result<()> {
        let idx = self.link_index(dev)?;
        let msg = LinkUnspec::new_with_index(idx)
            .address(parse_mac(mac)?.to_vec())
            .build();
        self.run(self.handle.link().set(msg).execute())
            .with_context(|| format!("set `{dev}` address {mac} in netns `{}`", self.netns()))
    }

    /// `ip link del DEV`.
    pub fn delete_link(&self, dev: &str) -> Result<()> {
        let idx = self.link_index(dev)?;
        self.run(self.handle.link().del(idx).execute())
            .with_context(|| format!("delete `{dev}` in netns `{}`", self.netns()))
    }
}
