//! Termination signals for the processes that own a terminal or children
//! (`db local`, `db master`): SIGTERM, SIGHUP and SIGINT sent to the process
//! run a clean-up (restore the terminal, stop the children) instead of
//! killing it on the spot.
//!
//! The signal handler only writes the signal number to a pipe (the one
//! async-signal-safe thing to do); a thread reads it and runs the clean-up.
//! Once the REPL runs ([`ignore_terminal_interrupt`]), a SIGINT the kernel
//! sends because Ctrl-C was typed at the terminal while a command runs is
//! ignored: it is not a request to stop anything (at the prompt the terminal
//! is in raw mode and Ctrl-C only clears the line). Before that, Ctrl-C
//! aborts a start-up like any other SIGINT.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Write end of the signal pipe (-1 until installed).
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// Set while a REPL runs: Ctrl-C typed at the terminal is not a stop request.
static IGNORE_TERMINAL_INTERRUPT: AtomicBool = AtomicBool::new(false);

/// From now on (`true`), ignore SIGINT sent by the terminal driver (Ctrl-C
/// typed while a REPL command runs); SIGINT sent with kill(2) still counts.
pub fn ignore_terminal_interrupt(ignore: bool) {
    IGNORE_TERMINAL_INTERRUPT.store(ignore, Ordering::Relaxed);
}

/// The signals handled.
pub const SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGHUP, libc::SIGINT];

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
    let code = if info.is_null() {
        libc::SI_USER
    } else {
        unsafe { (*info).si_code }
    };
    if sig == libc::SIGINT
        && code == libc::SI_KERNEL
        && IGNORE_TERMINAL_INTERRUPT.load(Ordering::Relaxed)
    {
        return;
    }
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored
        // so the interrupted code does not see it change.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Name of a handled signal.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

/// Runs `cleanup(signal)` on a thread of its own when the process receives
/// SIGTERM, SIGHUP or SIGINT (but see [`ignore_terminal_interrupt`]).
/// `cleanup` is expected to end the process. Install once per process.
pub fn on_termination(cleanup: impl FnOnce(i32) + Send + 'static) -> io::Result<()> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2(2) fills the two descriptors we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    PIPE_WRITE.store(write_fd, Ordering::Relaxed);
    for sig in SIGNALS {
        // SAFETY: a zeroed sigaction is valid; we set the handler, an empty
        // mask and SA_SIGINFO | SA_RESTART, then install it.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut byte = 0u8;
            loop {
                // SAFETY: read(2) of one byte into a byte we own.
                let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
                if n == 1 {
                    cleanup(i32::from(byte));
                    return;
                }
                if n == 0 {
                    return;
                }
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    return;
                }
            }
        })?;
    Ok(())
}
