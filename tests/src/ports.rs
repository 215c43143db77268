use std::net::TcpListener;

use crate::{HarnessError, Result};

/// Picks `count` distinct free TCP ports on 127.0.0.1. The listeners are held until all are
/// picked, so the ports differ from each other; another process may still take one before our
/// server binds it, which start-up then reports as an early exit.
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("binding 127.0.0.1:0"))?;
        *port = listener
            .local_addr()
            .map_err(HarnessError::io("reading a bound port"))?
            .port();
        listeners.push(listener);
    }
    Ok(ports)
}
