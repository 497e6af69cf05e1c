//! Lines for the user on stdout that never panic. `println!` panics when
//! stdout is a pipe whose reader has gone (`train ... | head -n 3`, or `tee`
//! killed by the same Ctrl-C): that lost the stop checkpoint of a run. Here
//! such output is dropped and the program goes on (a run keeps training and
//! checkpointing; a stop signal still exits with its code).

use std::io::Write;

/// One line on stdout, dropped if stdout is closed.
pub fn line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{args}");
}

/// Text without a newline on stdout, dropped if stdout is closed.
pub fn text(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.flush());
}

/// `println!` that drops output into a closed pipe instead of panicking.
#[macro_export]
macro_rules! out {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// `print!` that drops output into a closed pipe instead of panicking.
#[macro_export]
macro_rules! out_text {
    ($($arg:tt)*) => {
        $crate::output::text(format_args!($($arg)*))
    };
}
