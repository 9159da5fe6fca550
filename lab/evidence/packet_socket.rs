//! The AF_PACKET socket of a capture, opened in the calling thread's namespace.

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
    /// In the calling thread's namespace.
    pub fn open(dev: &str) -> Result<PacketSocket> {
        let lo_ifindex = nix::net::if_::if_nametoindex("lo").map_or(0, |i| i as i32);
        let (ifindex, cooked) = if dev == "any" {
            (0, true)
        } else {
            let idx = nix::net::if_::if_nametoindex(dev)
                .with_context(|| format!("no device `{dev}` in this namespace"))?;
            let hatype = hardware_type(dev)?;
            let ethernet_like = hatype == libc::ARPHRD_ETHER || hatype == libc::ARPHRD_LOOPBACK;
            (idx as i32, !ethernet_like)
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
                   // Receive timestamps on: the kernel stamps each skb as it is queued to the
                   // socket (sock_enable_timestamp), read back per packet with SIOCGSTAMPNS.
        setsockopt(
            s.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &1i32,
        )?;
        Ok(s)
    }

    /// The kernel's receive time (CLOCK_REALTIME) of the packet `recv` returned last
    /// (`SIOCGSTAMPNS`, sock_gettstamp); None when the kernel gives none.
    pub fn last_stamp(&self) -> Option<std::time::SystemTime> {
        const SIOCGSTAMPNS: libc::c_ulong = 0x8907;
        // SAFETY: timespec is plain old data the ioctl fills.
        let mut ts: libc::timespec = unsafe { zeroed() };
        // SAFETY: SIOCGSTAMPNS writes one timespec to the pointer passed.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCGSTAMPNS, &mut ts) };
        if r != 0 || ts.tv_sec <= 0 {
            return None;
        }
        Some(std::time::UNIX_EPOCH + std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    /// Returns the real packet length (MSG_TRUNC) and the packet's address.
    pub fn recv(
        &self,
        buf: &mut [u8],
        nonblocking: bool,
    ) -> io::Result<(usize, libc::sockaddr_ll)> {
        // SAFETY: sockaddr_ll is plain old data.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        let mut alen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let flags = libc::MSG_TRUNC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: buf and sll are valid for writes of the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut alen,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, sll))
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
