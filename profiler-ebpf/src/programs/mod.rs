//! The tracepoint programs, grouped by what they trace. Each is a thin entry that calls a
//! `try_*` function; the names of the entry functions are the program names user space
//! attaches.

mod mappings;
mod memory;
mod oom;
mod process;
