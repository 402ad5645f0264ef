//! The incoming handover: what the previous kernel handed to this one, and
//! the calls through which services take their part of it back.

use crate::task::Tasks;
use baton_abi::Error;

/// `kho_fetch()`: maps the sub-FDT the caller's previous instance published.
pub fn fetch(tasks: &mut Tasks, id: u64) -> Result<u64, Error> {
    let _ = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    // This kernel did not come from a handover that carries one.
    Err(Error::NoHandover)
}

/// `kho_restore(physical, order)`: takes back a folio the caller's previous
/// instance preserved.
pub fn restore(tasks: &mut Tasks, id: u64, _physical: u64, _order: u32) -> Result<u64, Error> {
    let _ = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    Err(Error::NoHandover)
}
