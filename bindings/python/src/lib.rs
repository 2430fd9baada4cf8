//! `cellshm._native`: the Python binding's native module. The pure-Python package
//! `cellshm` wraps it; `python/cellshm/_native.pyi` describes it (checked by stubtest).
//!
//! Every blocking wait and every large copy runs with the GIL released
//! (`Python::detach`); handlers run on cellshm's threads and take the GIL only while
//! Python code runs. Errors become the exception classes of `cellshm.errors`.
//!
//! Which file holds what: `errors.rs`, `args.rs` (arguments from Python), `handlers.rs`
//! (Python handlers, `current_call`), `asyncio.rs`, `stream.rs`, `link_end.rs` (every
//! call to the other side of a link, written once), `host.rs` (`Hub`, `Peer`),
//! `supervisor.rs` (`Supervisor`, `AttachListener`), `cell.rs`, `topic.rs` (publish/subscribe);
//! this file, the module.

use cellshm::{wire, Status};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

mod args;
mod asyncio;
mod cell;
mod errors;
mod handlers;
mod host;
mod link_end;
mod remote;
mod stream;
mod supervisor;
mod topic;

pub(crate) use args::*;
pub(crate) use asyncio::*;
pub(crate) use cell::*;
pub(crate) use errors::*;
pub(crate) use handlers::*;
pub(crate) use host::*;
pub(crate) use link_end::{Closable, LinkEnd};
pub(crate) use stream::*;
pub(crate) use supervisor::*;

/// Responses from this size on are copied into Python with the GIL released.
pub(crate) const LARGE_COPY: usize = 64 * 1024;

/// Method id of "Service.method" (FNV-1a 64 folded to 32 bits).
#[pyfunction]
fn method_id(name: &str) -> u32 {
    wire::method_id(name)
}

/// The canonical name of a status code, e.g. 4 -> "DEADLINE_EXCEEDED".
#[pyfunction]
fn status_name(code: u32) -> PyResult<&'static str> {
    Status::from_code(code)
        .map(Status::name)
        .ok_or_else(|| PyValueError::new_err(format!("{code} is not a cellshm status code")))
}

/// One live hub: (name, host_pid, uid, peers, max_peers, uptime_ms, attach).
type HubRow = (String, u32, u32, u32, u32, u64, bool);

/// The live hubs of this user.
#[pyfunction]
fn list_hubs(py: Python<'_>) -> PyResult<Vec<HubRow>> {
    let hubs = py.detach(cellshm::list_hubs).map_err(err)?;
    Ok(hubs.into_iter().map(|h| (h.name, h.host_pid, h.uid, h.peers, h.max_peers, h.uptime_ms, h.attach)).collect())
}

/// Generates stubs for `lang` (`rust`, `c`, `python`) from `files` (found in
/// `includes`) into `out`; returns the paths written, relative to `out`. ValueError
/// for a bad language, a `.proto` that does not compile or clashing method ids.
#[pyfunction]
fn codegen(py: Python<'_>, lang: &str, out: &str, includes: Vec<String>, files: Vec<String>) -> PyResult<Vec<String>> {
    let value_error = |e: cellshm_codegen::Error| pyo3::exceptions::PyValueError::new_err(e.0);
    let lang = cellshm_codegen::Lang::parse(lang).map_err(value_error)?;
    py.detach(|| {
        let fds = cellshm_codegen::parse(&files, &includes)?;
        let names = cellshm_codegen::file_names(&fds, &files, &includes);
        cellshm_codegen::generate(lang, &fds, &names)
    })
    .map_err(value_error)
    .and_then(|generated| {
        cellshm_codegen::write(std::path::Path::new(out), &generated)
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        Ok(generated.into_iter().map(|f| f.name).collect())
    })
}

/// The protoc plugin: an encoded CodeGeneratorRequest in, the encoded response out.
#[pyfunction]
fn codegen_plugin(request: &[u8]) -> PyResult<Vec<u8>> {
    cellshm_codegen::plugin::respond(request).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.0))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    let codes = PyDict::new(py);
    for status in Status::ALL {
        codes.set_item(status.name(), status.code())?;
    }
    m.add("STATUS_CODES", codes)?;
    let levels = PyTuple::new(
        py,
        [
            wire::log_level::ERROR,
            wire::log_level::WARN,
            wire::log_level::INFO,
            wire::log_level::DEBUG,
            wire::log_level::TRACE,
        ],
    )?;
    m.add("LOG_LEVELS", levels)?;
    m.add_function(wrap_pyfunction!(method_id, m)?)?;
    m.add_function(wrap_pyfunction!(list_hubs, m)?)?;
    m.add_function(wrap_pyfunction!(status_name, m)?)?;
    m.add_function(wrap_pyfunction!(current_call, m)?)?;
    m.add_function(wrap_pyfunction!(codegen, m)?)?;
    m.add_function(wrap_pyfunction!(codegen_plugin, m)?)?;
    m.add_function(wrap_pyfunction!(topic::wait_any, m)?)?;
    m.add_class::<CallContext>()?;
    m.add_class::<Hub>()?;
    m.add_class::<remote::Remote>()?;
    m.add_class::<Peer>()?;
    m.add_class::<LinkEnd>()?;
    m.add_class::<Cell>()?;
    m.add_class::<PendingCall>()?;
    m.add_class::<Stream>()?;
    m.add_class::<StreamCall>()?;
    m.add_class::<AsyncNotifier>()?;
    m.add_class::<Supervisor>()?;
    m.add_class::<EventSubscription>()?;
    m.add_class::<AttachListener>()?;
    m.add_class::<topic::Publisher>()?;
    m.add_class::<topic::Loan>()?;
    m.add_class::<topic::Subscriber>()?;
    m.add_class::<topic::Sample>()?;
    Ok(())
}
