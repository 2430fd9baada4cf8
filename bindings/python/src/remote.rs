//! Remote gRPC servers as peers (`cellshm.Hub.add_remote`): `cellshm_grpc::Remote` on
//! `cellshm_grpc::shared_runtime`, made on first use.

use cellshm::MethodKind;
use cellshm_grpc::RemoteOptions;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::*;

/// `add_remote`'s `methods` and `timeout` as options.
pub(crate) fn options(methods: Option<Vec<(String, u32)>>, timeout: f64) -> PyResult<RemoteOptions> {
    let mut options = RemoteOptions::new().connect_timeout(duration(timeout, "timeout")?);
    for (method, kind) in methods.unwrap_or_default() {
        let kind = MethodKind::from_code(kind)
            .ok_or_else(|| pyo3::exceptions::PyValueError::new_err(format!("{kind} is not a method kind (0 to 4)")))?;
        options = options.method(method, kind);
    }
    Ok(options)
}

/// Connects to the remote (on the binding's runtime, GIL released): see
/// `cellshm_grpc::Remote::connect`.
pub(crate) fn connect(py: Python<'_>, name: &str, url: &str, options: RemoteOptions) -> PyResult<Remote> {
    let runtime = cellshm_grpc::shared_runtime().map_err(err)?;
    let remote = py.detach(|| runtime.block_on(cellshm_grpc::Remote::connect(name, url, options))).map_err(err)?;
    Ok(Remote { remote })
}

/// A remote gRPC server added to a hub (see `cellshm.Remote`).
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct Remote {
    pub(crate) remote: cellshm_grpc::Remote,
}

#[pymethods]
impl Remote {
    #[getter]
    fn name(&self) -> String {
        self.remote.name().to_string()
    }

    #[getter]
    fn url(&self) -> String {
        self.remote.url().to_string()
    }

    /// (name, kind code) of each method served from it.
    #[getter]
    fn methods(&self) -> Vec<(String, u32)> {
        self.remote.methods().iter().map(|(m, k)| (m.clone(), *k as u32)).collect()
    }

    /// (calls forwarded, of which failed).
    #[getter]
    fn counters(&self) -> (u64, u64) {
        self.remote.counters()
    }

    /// A unary call from the host (GIL released while it waits).
    #[pyo3(signature = (method, payload=None, timeout=None))]
    fn call(
        &self,
        py: Python<'_>,
        method: &str,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyBytes>> {
        let (method, request, options) = call_args(method, payload, timeout)?;
        let runtime = cellshm_grpc::shared_runtime().map_err(err)?;
        let reply =
            py.detach(|| runtime.block_on(self.remote.call(method, request.as_slice(), &options))).map_err(err)?;
        Ok(PyBytes::new(py, &reply).unbind())
    }

    /// The remote's gRPC health Check of `service` ("" for the server): True if SERVING.
    #[pyo3(signature = (service="", timeout=5.0))]
    fn is_serving(&self, py: Python<'_>, service: &str, timeout: f64) -> PyResult<bool> {
        let timeout = duration(timeout, "timeout")?;
        let runtime = cellshm_grpc::shared_runtime().map_err(err)?;
        py.detach(|| runtime.block_on(self.remote.is_serving(service, timeout))).map_err(err)
    }
}
