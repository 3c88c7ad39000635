//! The process's open-file limit (`RLIMIT_NOFILE`): each HTTP/1.1
//! connection `load` holds is a socket, one descriptor.
//!
//! Many systems start a process with a soft limit of 1,024 under a hard
//! limit far higher; a `load -c 2000` then failed its connections past the
//! first thousand with "Too many open files", counted as the target's
//! errors. As Go's runtime does at start (Linux and macOS), the binary
//! raises the soft limit to the hard one, and `load` warns when `-c` still
//! needs more than the limit allows.

/// Raises the soft limit to the hard one where it can. Where the system
/// refuses that (macOS, whose hard limit reads unlimited while a process
/// may open at most `OPEN_MAX`, 10,240), it tries 10,240, as Go caps it
/// there; failing that too, the soft limit stays. Returns the soft limit
/// now in force, `None` where the system has none to tell (not Unix).
pub fn raise() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: getrlimit and setrlimit write only the struct given, which
        // lives on this stack.
        unsafe {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            const OPEN_MAX: libc::rlim_t = 10_240;
            for want in [lim.rlim_max, lim.rlim_max.min(OPEN_MAX)] {
                if want <= lim.rlim_cur {
                    break;
                }
                let raised = libc::rlimit {
                    rlim_cur: want,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = want;
                    break;
                }
            }
            // (`rlim_t` is `u64` on Linux and macOS, not on every Unix.)
            #[allow(clippy::useless_conversion)]
            let soft = u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX);
            Some(soft)
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Descriptors a run needs beside its connections: the runtime's own
/// (epoll, its wake-up pipe), standard streams, a resolver's socket, and
/// connections closing while new ones open.
pub const SPARE: u64 = 64;

/// The warning for `connections` sockets under a `limit` of descriptors,
/// if they do not fit beside [`SPARE`].
pub fn warning(connections: u64, limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    let needed = connections.saturating_add(SPARE);
    (needed > limit).then(|| {
        format!(
            "-c {connections} may need {needed} file descriptors over HTTP/1.1 (a socket per \
             connection), more than this process may open ({limit}, its open-file limit \
             raised as far as the system allows): connections past it fail with \"Too many \
             open files\"; lower -c or raise the limit (ulimit -n and -Hn, or LimitNOFILE= \
             for a service)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_past_the_limit() {
        assert_eq!(warning(100, None), None, "no limit known: nothing to say");
        assert_eq!(warning(1024 - SPARE, Some(1024)), None);
        let w = warning(1024 - SPARE + 1, Some(1024)).expect("one over");
        assert!(
            w.contains("-c 961") && w.contains("1025") && w.contains("(1024"),
            "{w}"
        );
        assert!(warning(u64::MAX, Some(1024)).is_some(), "no overflow");
    }

    /// `raise` lifts a lowered soft limit back to the hard one. (Lowering
    /// the soft limit is always allowed; the other tests of this binary
    /// open few files.)
    #[cfg(target_os = "linux")]
    #[test]
    fn raise_lifts_the_soft_limit_to_the_hard_one() {
        let read = || {
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
            let line = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .expect("a line for open files")
                .to_owned();
            // "Max open files  <soft>  <hard>  files"
            let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            (fields[3].clone(), fields[4].clone())
        };
        let (_, hard) = read();
        let hard: u64 = hard.parse().expect("a finite hard limit");
        // SAFETY: as in `raise`.
        unsafe {
            let lowered = libc::rlimit {
                rlim_cur: (hard / 2) as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
        }
        assert_eq!(read().0, (hard / 2).to_string(), "lowered");
        assert_eq!(raise(), Some(hard));
        assert_eq!(read(), (hard.to_string(), hard.to_string()));
    }
}
