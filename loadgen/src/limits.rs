//! The machine limits a run can hit, checked before it starts: open files
//! per process (sets how many worker processes hold the connections) and
//! ephemeral ports per source address.

use std::net::Ipv4Addr;

/// Descriptors a worker keeps back for stdio, io_uring and eventfds.
const WORKER_SPARE_FDS: u64 = 128;

/// Past this many connections per source address to one destination,
/// `connect()` slows to a crawl on our machines (measured).
pub const PER_SOURCE_SOFT_LIMIT: usize = 14_000;

/// Raises the soft open-file limit to the hard one; returns it.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// Connections one worker process can hold under `nofile`.
pub fn per_worker(nofile: u64) -> usize {
    nofile.saturating_sub(WORKER_SPARE_FDS).max(1) as usize
}

/// Worker processes needed: at least `wanted`, and enough that none holds
/// more than its open-file limit allows.
pub fn workers_for(conns: usize, wanted: usize, nofile: u64) -> usize {
    wanted.max(1).max(conns.div_ceil(per_worker(nofile)))
}

/// The local ephemeral port range, from /proc.
pub fn ephemeral_ports() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<usize>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// Refuses a run whose connections per source address exceed the
/// ephemeral range or the measured slow-down point, naming the limit, its
/// value and the fix.
pub fn check_sources(conns: usize, ips: &[Ipv4Addr], ports: Option<usize>) -> Result<(), String> {
    let n = ips.len().max(1);
    let per_ip = conns.div_ceil(n);
    if let Some(ports) = ports.filter(|p| per_ip > *p) {
        return Err(format!(
            "--conns {conns} over {n} source address(es) is {per_ip} per address, more than the \
             {ports} ephemeral ports (net.ipv4.ip_local_port_range); give more addresses, e.g. \
             --source-ips 127.0.0.2-127.0.0.{}",
            1 + conns.div_ceil(PER_SOURCE_SOFT_LIMIT).max(2)
        ));
    }
    if per_ip > PER_SOURCE_SOFT_LIMIT {
        return Err(format!(
            "--conns {conns} over {n} source address(es) is {per_ip} per address; past about \
             {PER_SOURCE_SOFT_LIMIT} per address connect() slows to a crawl; give more addresses, \
             e.g. --source-ips 127.0.0.2-127.0.0.{}",
            1 + conns.div_ceil(PER_SOURCE_SOFT_LIMIT).max(2)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_grow_past_the_file_limit() {
        assert_eq!(workers_for(1_000, 2, 20_000), 2);
        assert_eq!(workers_for(19_000, 1, 20_000), 1);
        assert_eq!(workers_for(50_000, 2, 20_000), 3);
        assert_eq!(workers_for(10, 2, 1_000), 2);
    }

    #[test]
    fn too_many_connections_per_source_name_the_limit_and_fix() {
        let one = ["127.0.0.2".parse().unwrap()];
        assert!(check_sources(10_000, &one, Some(28_232)).is_ok());
        let e = check_sources(20_000, &one, Some(28_232)).unwrap_err();
        assert!(e.contains("14000") && e.contains("--source-ips"), "{e}");
        let e = check_sources(30_000, &one, Some(28_232)).unwrap_err();
        assert!(e.contains("ip_local_port_range") && e.contains("28232"), "{e}");
    }
}
