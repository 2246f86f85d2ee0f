//! Unix socket files created with a given mode, for the listeners
//! (`--uds-mode`) and the operator's endpoints (0600).

use std::path::Path;

use drover_shared::{Listener, ListenerSpec};
use nix::sys::stat::{umask, Mode};

/// Opens a Unix socket at `path` whose file has `mode`. The mode is set
/// through the umask at bind, not by a chmod after it: a chmod by path (as
/// root) would follow a symlink put in the socket's place meanwhile. The
/// supervisor is single-threaded, so the umask is this bind's alone.
pub(crate) fn open_unix_with_mode(
    path: &Path,
    mode: u32,
    backlog: u32,
) -> Result<Listener, String> {
    let previous = umask(Mode::from_bits_truncate(0o777 & !mode));
    let opened = ListenerSpec::Unix(path.to_owned()).open(backlog);
    umask(previous);
    opened.map_err(|e| e.to_string())
}
