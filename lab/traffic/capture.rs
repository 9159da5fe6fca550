//! AF_PACKET capture of every IP packet a namespace's devices see (link header stripped).

use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// One captured packet.
pub struct Captured {
    /// The IPv4/IPv6 packet.
    pub data: Vec<u8>,
    /// Sent by this namespace (PACKET_OUTGOING) rather than received.
    pub outgoing: bool,
}

/// A packet socket bound to all devices of the namespace it was opened in.
pub struct Capture {
    fd: OwnedFd,
}

impl Capture {
    /// Opens a capture inside `ns`.
    pub fn open_in(ns: &str) -> Result<Capture> {
        crate::netns::run_in(ns, Capture::open_here)
    }

    /// Opens a capture in the calling thread's namespace.
    pub fn open_here() -> Result<Capture> {
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2) call; the fd is owned right after.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                proto,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt with a valid int option.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        Ok(Capture { fd })
    }

    /// The next IP packet, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Captured> {
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if r <= 0 {
                return None;
            }
            // SAFETY: sockaddr_ll is plain data; recvfrom writes at most its size.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut slen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and sll are valid for writes of the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut slen,
                )
            };
            if n > 0 {
                let proto = u16::from_be(sll.sll_protocol);
                if proto == libc::ETH_P_IP as u16 || proto == libc::ETH_P_IPV6 as u16 {
                    return Some(Captured {
                        data: buf[..n as usize].to_vec(),
                        outgoing: sll.sll_pkttype == libc::PACKET_OUTGOING,
                    });
                }
            }
            if Instant::now() >= end {
                return None;
            }
        }
    }

    /// Everything captured until `quiet` passes with nothing new (bounded by `max`).
    pub fn drain(&self, quiet: Duration, max: Duration) -> Vec<Captured> {
        let end = Instant::now() + max;
        let mut v = Vec::new();
        while Instant::now() < end {
            match self.next(quiet) {
                Some(p) => v.push(p),
                None => break,
            }
        }
        v
    }
}
