//! The AF_PACKET socket of a capture, opened in the calling thread's namespace, with
//! an optional kernel filter (SO_ATTACH_FILTER) attached before it is bound, so no
//! packet reaches it unfiltered.

use crate::model::pcap_filter::BpfInsn;
use anyhow::{bail, Context, Result};
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const RCVBUF: libc::c_int = 8 << 20;

/// The Linux cooked (SLL) header libpcap writes for `any` and non-Ethernet devices.
pub fn sll_header(sll: &libc::sockaddr_ll) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..2].copy_from_slice(&u16::from(sll.sll_pkttype).to_be_bytes());
    h[2..4].copy_from_slice(&sll.sll_hatype.to_be_bytes());
    h[4..6].copy_from_slice(&u16::from(sll.sll_halen).to_be_bytes());
    let n = usize::from(sll.sll_halen).min(8);
    h[6..6 + n].copy_from_slice(&sll.sll_addr[..n]);
    // sll_protocol is already in network byte order.
    h[14..16].copy_from_slice(&sll.sll_protocol.to_ne_bytes());
    h
}

/// One packet `recv` returned.
pub struct Received {
    /// The real packet length (MSG_TRUNC), whatever fitted the buffer.
    pub len: usize,
    pub sll: libc::sockaddr_ll,
    /// The kernel's receive time (SCM_TIMESTAMPNS, CLOCK_REALTIME), when it gave one.
    pub stamp: Option<std::time::SystemTime>,
    /// The 802.1Q / 802.1ad tag the kernel took off the packet (TPID, TCI), from
    /// PACKET_AUXDATA: packet sockets never see tags in the data.
    pub vlan: Option<[u8; 4]>,
}

pub struct PacketSocket {
    fd: OwnedFd,
    /// SOCK_DGRAM + cooked header: `any`, and devices without an Ethernet header.
    pub cooked: bool,
    pub lo_ifindex: i32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live T of the given size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

impl PacketSocket {
    /// Whether a capture on `dev` (in the calling thread's namespace) is cooked
    /// (SOCK_DGRAM + SLL header): `any`, and devices without an Ethernet header.
    pub fn is_cooked(dev: &str) -> Result<bool> {
        if dev == "any" {
            return Ok(true);
        }
        nix::net::if_::if_nametoindex(dev)
            .with_context(|| format!("no device `{dev}` in this namespace"))?;
        let hatype = hardware_type(dev)?;
        Ok(hatype != libc::ARPHRD_ETHER && hatype != libc::ARPHRD_LOOPBACK)
    }

    /// In the calling thread's namespace; `filter` is attached before the socket is
    /// bound (SOCK_RAW programs see the Ethernet header, SOCK_DGRAM ones the packet
    /// without a link-layer header).
    pub fn open(dev: &str, filter: Option<&[BpfInsn]>) -> Result<PacketSocket> {
        let lo_ifindex = nix::net::if_::if_nametoindex("lo").map_or(0, |i| i as i32);
        let (ifindex, cooked) = if dev == "any" {
            (0, true)
        } else {
            let idx = nix::net::if_::if_nametoindex(dev)
                .with_context(|| format!("no device `{dev}` in this namespace"))?;
            (idx as i32, PacketSocket::is_cooked(dev)?)
        };
        let kind = if cooked {
            libc::SOCK_DGRAM
        } else {
            libc::SOCK_RAW
        };
        // Protocol 0: the socket receives nothing until bound, so no other device leaks in.
        // SAFETY: plain socket(2); the returned fd is owned right away.
        let fd = unsafe {
            OwnedFd::from_raw_fd(
                cvt(libc::socket(libc::AF_PACKET, kind | libc::SOCK_CLOEXEC, 0))
                    .context("socket(AF_PACKET)")?,
            )
        };
        let raw = fd.as_raw_fd();
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &0 as &libc::c_int,
        )
        .context("PACKET_IGNORE_OUTGOING")?;
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF).is_err() {
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF).context("SO_RCVBUF")?;
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).context("SO_RCVTIMEO")?;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_AUXDATA, &1i32).context("PACKET_AUXDATA")?;
        if let Some(prog) = filter {
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                // The kernel copies the program (sk_attach_filter); it is read, never written.
                filter: prog.as_ptr().cast_mut().cast(),
            };
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
                .context("SO_ATTACH_FILTER (the capture's kernel filter)")?;
        }
        // SAFETY: sockaddr_ll is plain old data.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: binding with a fully initialised sockaddr_ll of its own size.
        cvt(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .with_context(|| format!("bind packet socket to `{dev}`"))?;
        let s = PacketSocket {
            fd,
            cooked,
            lo_ifindex,
        };
        s.drops(); // PACKET_STATISTICS resets on read
                   // Receive timestamps on: the kernel stamps each skb as it is queued to the socket
                   // (sock_enable_timestamp) and hands the stamp over with it (SCM_TIMESTAMPNS).
        setsockopt(
            s.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &1i32,
        )?;
        Ok(s)
    }

    /// The next packet into `buf`.
    pub fn recv(&self, buf: &mut [u8], nonblocking: bool) -> io::Result<Received> {
        // SAFETY: sockaddr_ll and msghdr are plain old data.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for tpacket_auxdata and a timespec with their cmsg headers.
        let mut control = [0u64; 16];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 16]>();
        let flags = libc::MSG_TRUNC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: every pointer in msg is valid for writes of the length next to it.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut got = Received {
            len: n as usize,
            sll,
            stamp: None,
            vlan: None,
        };
        // SAFETY: the CMSG_* walk stays inside msg_control as the kernel filled it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::SOL_PACKET, libc::PACKET_AUXDATA) => {
                        let aux: libc::tpacket_auxdata = std::ptr::read_unaligned(data.cast());
                        got.vlan = vlan_tag(&aux);
                    }
                    (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                        let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                        if ts.tv_sec > 0 {
                            got.stamp = Some(
                                std::time::UNIX_EPOCH
                                    + std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32),
                            );
                        }
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(got)
    }

    /// Packets dropped by the kernel since the last call.
    pub fn drops(&self) -> u64 {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: st is valid for writes of len bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r < 0 {
            0
        } else {
            u64::from(st.tp_drops)
        }
    }
}

/// The tag as it sits in a frame (TPID, TCI), when the kernel reports one: a nonzero
/// TCI, or TP_STATUS_VLAN_VALID for VLAN 0 (libpcap's VLAN_VALID in pcap-linux.c).
fn vlan_tag(aux: &libc::tpacket_auxdata) -> Option<[u8; 4]> {
    if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 && aux.tp_vlan_tci == 0 {
        return None;
    }
    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
        aux.tp_vlan_tpid
    } else {
        0x8100
    };
    let [t0, t1] = tpid.to_be_bytes();
    let [c0, c1] = aux.tp_vlan_tci.to_be_bytes();
    Some([t0, t1, c0, c1])
}

/// ARPHRD_* of a device, via SIOCGIFHWADDR in the current namespace.
fn hardware_type(dev: &str) -> Result<u16> {
    // SAFETY: a throwaway datagram socket for the ioctl, owned right away.
    let sock = unsafe {
        OwnedFd::from_raw_fd(cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?)
    };
    // SAFETY: ifreq is plain old data; the name is NUL-terminated (dev ≤ 15 bytes checked).
    unsafe {
        let mut ifr: libc::ifreq = zeroed();
        if dev.len() >= ifr.ifr_name.len() {
            bail!("device name `{dev}` too long");
        }
        for (i, b) in dev.bytes().enumerate() {
            ifr.ifr_name[i] = b as libc::c_char;
        }
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr))
            .with_context(|| format!("SIOCGIFHWADDR {dev}"))?;
        Ok(ifr.ifr_ifru.ifru_hwaddr.sa_family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooked_header_layout() {
        // SAFETY: sockaddr_ll is plain old data.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_pkttype = libc::PACKET_OUTGOING;
        sll.sll_hatype = libc::ARPHRD_ETHER;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        sll.sll_protocol = 0x0800u16.to_be();
        assert_eq!(
            sll_header(&sll),
            [0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00]
        );
    }
}
