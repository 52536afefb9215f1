//! Fits the connection cap to the file descriptors the process may open,
//! so the silo refuses connections with a goodbye at its own cap instead of
//! failing to accept them (and everything else that needs a descriptor).

/// Descriptors kept for everything but client connections: the listener,
/// store connections, the data files, peers, logs.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft limit on open files to the hard one (what an operator
/// allowed), then returns `wanted`, or fewer if the limit leaves less room,
/// and the limit (`None` where it cannot be read).
pub(crate) fn fit_connection_cap(wanted: usize) -> (usize, Option<u64>) {
    let Some(limit) = raise_open_files_limit() else {
        return (wanted, None);
    };
    let room = limit.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    let cap = usize::try_from(room).map_or(wanted, |room| wanted.min(room));
    (cap, Some(limit))
}

/// The soft limit after raising it as far as allowed.
fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // RLIM_INFINITY is u64::MAX: no limit worth fitting to.
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_never_exceeds_what_was_asked_nor_the_descriptors() {
        let (cap, limit) = fit_connection_cap(1_000_000_000);
        let limit = limit.expect("Linux reports its limit");
        assert!(cap as u64 <= limit.saturating_sub(RESERVED_DESCRIPTORS).max(1));
        assert_eq!(fit_connection_cap(10).0, 10);
    }
}
