//! How deep each shard's io_uring rings are, from what the kernel charges
//! for them.
//!
//! Every socket a shard waits on holds an armed poll in the main ring, and
//! the kernel keeps those in a hash table of `2^(log2(cq_entries) - 5)`
//! buckets, at most 256. glommio cancels its preemption timer on every turn
//! of the reactor, and a cancel walks one bucket: with glommio's default
//! depth of 128 (8 buckets) that is an eighth of all the shard's
//! connections, every turn (measured: 5.8% of a shard's CPU at 6,000
//! connections). 4,096 entries give the 256 buckets. Linux 5.12 and later
//! charge ring memory to the memory cgroup; earlier kernels charge it to
//! `RLIMIT_MEMLOCK` (about 1.2 MiB per shard at 4,096, three rings), so
//! there the default depth is kept.

/// Ring depth that gives the kernel's largest cancel hash table.
pub const DEEP: usize = 4096;

/// glommio's own default, kept where ring memory is locked memory.
pub const SHALLOW: usize = 128;

/// The ring depth for this kernel, and why.
pub fn depth() -> (usize, &'static str) {
    depth_for(&kernel_release())
}

fn depth_for(release: &str) -> (usize, &'static str) {
    match version(release) {
        Some(v) if v >= (5, 12) => (DEEP, "ring memory is not locked memory on this kernel"),
        Some(_) => (
            SHALLOW,
            "kernel before 5.12: ring memory counts against RLIMIT_MEMLOCK",
        ),
        None => (SHALLOW, "kernel release not understood"),
    }
}

/// (major, minor) of a release such as `6.18.0-rc1-amd64`.
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain bytes, valid zeroed; uname fills it.
    let (rc, name) = unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        (libc::uname(&mut name), name)
    };
    if rc != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = name
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_rings_from_linux_5_12() {
        assert_eq!(depth_for("6.18.0-1-amd64").0, DEEP);
        assert_eq!(depth_for("5.12.0").0, DEEP);
        assert_eq!(depth_for("10.0").0, DEEP);
        assert_eq!(depth_for("5.11.22-generic").0, SHALLOW);
        assert_eq!(depth_for("4.19.0").0, SHALLOW);
        assert_eq!(depth_for("").0, SHALLOW);
        assert_eq!(depth_for("linux").0, SHALLOW);
    }

    #[test]
    fn this_kernel_has_a_release() {
        assert!(version(&kernel_release()).is_some());
    }
}
