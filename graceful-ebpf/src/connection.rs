//! `sock:inet_sock_set_state`: every container's count of established TCP connections, and the
//! state changes of those being stopped, attributed by the socket's own cgroup (a state change
//! of an incoming packet runs on whatever task the CPU was on). A running container's
//! connect/close storm costs five reads and an atomic add per connection.
use super::*;

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let base = ctx.as_ptr() as u64;
    // SAFETY: offsets inside the tracepoint's record, from its format file.
    let protocol: u16 = unsafe { read_kernel(base, config!(conn_protocol)) };
    if protocol != IPPROTO_TCP {
        return 0;
    }
    // SAFETY: as above.
    let sk: u64 = unsafe { read_kernel(base, config!(conn_skaddr)) };
    let cgroup = sock_cgroup(sk);
    if cgroup == 0 {
        return 0;
    }
    // SAFETY: as above.
    let (oldstate, newstate): (i32, i32) = unsafe {
        (
            read_kernel(base, config!(conn_oldstate)),
            read_kernel(base, config!(conn_newstate)),
        )
    };
    // Every container's count, so that a stop knows how many were open when it came.
    if newstate == TCP_ESTABLISHED {
        count_established(cgroup, 1);
    } else if oldstate == TCP_ESTABLISHED {
        count_established(cgroup, -1);
    }
    if !stopping(cgroup) {
        return 0;
    }
    // SAFETY: as above.
    let (sport, dport): (u16, u16) = unsafe {
        (
            read_kernel(base, config!(conn_sport)),
            read_kernel(base, config!(conn_dport)),
        )
    };
    if oldstate == TCP_LISTEN && newstate == TCP_CLOSE {
        let key = ListenerKey {
            netns: sock_netns(sk),
            port: sport,
            _pad: 0,
        };
        let _ = CLOSED_LISTENERS.insert(key, cgroup, 0);
    }
    output(
        &ctx,
        ConnRecord {
            header: header(Kind::Conn),
            oldstate,
            newstate,
            sport,
            dport,
            _pad: 0,
            cgroup,
            sk,
            inode: sock_inode(sk),
        },
    );
    0
}

/// `tcp:tcp_send_reset(sk, skb, ..)`: every reset the kernel sends, the socketless ones too
/// from 6.10 on (the daemon attaches this one only then).
#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn refused_tp(ctx: RawTracePointContext) -> i32 {
    refused(&ctx, ctx.arg(0), ctx.arg(1));
    0
}

/// Before 6.10, the functions themselves: `tcp_v4_send_reset(sk, skb, ..)`.
#[fentry(function = "tcp_v4_send_reset")]
pub fn refused_v4(ctx: FEntryContext) -> u32 {
    refused(&ctx, ctx.arg(0), ctx.arg(1));
    0
}

/// The same for IPv6.
#[fentry(function = "tcp_v6_send_reset")]
pub fn refused_v6(ctx: FEntryContext) -> u32 {
    refused(&ctx, ctx.arg(0), ctx.arg(1));
    0
}

/// A reset without a socket: nobody listened on the port a connection attempt came to.
/// Counted for a container that closed that port's listener while being stopped.
#[inline(always)]
fn refused<C: EbpfContext>(ctx: &C, sk: u64, skb: u64) {
    if sk != 0 || skb == 0 {
        return;
    }
    // SAFETY: the packet being answered; pointers are checked before they are followed and
    // the offsets are BTF's.
    let (flags, port, netns) = unsafe {
        let head: u64 = read_kernel(skb, config!(skb_head));
        let transport: u16 = read_kernel(skb, config!(skb_transport_header));
        let dev: u64 = read_kernel(skb, config!(skb_dev));
        if head == 0 || dev == 0 {
            return;
        }
        let th = head + u64::from(transport);
        let flags: u8 = read_kernel(th, TCP_FLAGS_OFFSET);
        let port: u16 = read_kernel(th, TCP_DEST_OFFSET);
        let net: u64 = read_kernel(dev, config!(netdev_net));
        (flags, u16::from_be(port), net_inum(net))
    };
    // A connection attempt: SYN without ACK.
    if flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return;
    }
    let key = ListenerKey {
        netns,
        port,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    let Some(cgroup) = (unsafe { CLOSED_LISTENERS.get(key) }).copied() else {
        return;
    };
    output(
        ctx,
        RefusedRecord {
            header: header(Kind::Refused),
            port,
            _pad: [0; 3],
            cgroup,
        },
    );
}

/// TCP header: the destination port (big endian) and the flags byte.
const TCP_DEST_OFFSET: u32 = 2;
const TCP_FLAGS_OFFSET: u32 = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A socket's network namespace (its `ns.inum`).
#[inline(always)]
fn sock_netns(sk: u64) -> u32 {
    // SAFETY: `sk` is the live socket the tracepoint is about; the offset is BTF's.
    net_inum(unsafe { read_kernel(sk, config!(sock_net)) })
}

#[inline(always)]
fn net_inum(net: u64) -> u32 {
    if net == 0 {
        return 0;
    }
    // SAFETY: a live `struct net`, checked for null; the offset is BTF's.
    unsafe { read_kernel(net, config!(net_inum)) }
}

/// The cgroup2 id of the task that created the socket (0 when the kernel keeps classid data in
/// its place: a node where net_cls or net_prio is in use, before 5.15).
#[inline(always)]
fn sock_cgroup(sk: u64) -> u64 {
    if sk == 0 {
        return 0;
    }
    // SAFETY: `sk` is the live socket the tracepoint is about; the offset is BTF's.
    let word: u64 = unsafe { read_kernel(sk, config!(sock_cgrp_data)) };
    if config!(cgrp_data_tagged) != 0 && word & 1 != 0 {
        return 0;
    }
    cgroup_id(word)
}

/// The socket's inode number, which /proc shows for its fd; 0 without a file.
#[inline(always)]
fn sock_inode(sk: u64) -> u64 {
    // SAFETY: each pointer is checked before it is followed; offsets are BTF's.
    unsafe {
        let socket: u64 = read_kernel(sk, config!(sock_socket));
        if socket == 0 {
            return 0;
        }
        let file: u64 = read_kernel(socket, config!(socket_file));
        if file == 0 {
            return 0;
        }
        let inode: u64 = read_kernel(file, config!(file_inode));
        if inode == 0 {
            return 0;
        }
        read_kernel(inode, config!(inode_ino))
    }
}

/// Not attached by the daemon: the benchmark's floor on the same tracepoint.
#[cfg(feature = "floor")]
#[tracepoint]
pub fn inet_sock_set_state_floor(_ctx: TracePointContext) -> u32 {
    0
}
