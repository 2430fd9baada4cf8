//! Publish/subscribe (see `cellshm.Publisher`, `cellshm.Subscriber`): the same for a
//! hub, a supervisor and a cell, through `cellshm::Topics`. Samples are read in place
//! through a read-only memoryview, loans written in place through a writable one; a
//! view is released before its sample or loan goes, or the sample is kept (retained)
//! until it can be.

use std::sync::Arc;

use cellshm::{
    Error, Loan as CoreLoan, Publisher as CorePublisher, Sample as CoreSample, Status, Subscriber as CoreSubscriber,
    TopicOptions, TopicPolicy,
};
use parking_lot::Mutex;
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::*;

/// CPython's `PyBUF_WRITE` flag for `PyMemoryView_FromMemory` (stable ABI).
const PYBUF_WRITE: std::os::raw::c_int = 0x200;

fn closed(what: &str) -> PyErr {
    err(Error::new(Status::FailedPrecondition, format!("the {what} is closed")))
}

/// `Hub.publish`, `Cell.publish` and `Supervisor.publish`: `publish` is the owner's
/// `Topics::publish`, run with the GIL released.
pub(crate) fn publish(
    py: Python<'_>,
    name: &str,
    options: (u32, u32, u32, u32, u32),
    publish: impl FnOnce(&str, TopicOptions) -> PyResult<CorePublisher> + Send,
) -> PyResult<Publisher> {
    let (sample_size, depth, history, max_subscribers, max_borrowed) = options;
    let options = TopicOptions { sample_size, depth, history, max_subscribers, max_borrowed };
    let publisher = py.detach(|| publish(name, options))?;
    Ok(Publisher { publisher: Mutex::new(Some(publisher)) })
}

/// `Hub.subscribe`, `Cell.subscribe` and `Supervisor.subscribe`: `policy` as its wire
/// code (0 block, 1 drop oldest, 2 drop newest, 3 disconnect after `n`), `wait` as for
/// `Hub.spawn`; `subscribe` is the owner's `Topics::subscribe`, run with the GIL released.
pub(crate) fn subscribe(
    py: Python<'_>,
    name: &str,
    policy: (u32, u32),
    wait: (&str, u64),
    subscribe: impl FnOnce(&str, TopicPolicy) -> PyResult<CoreSubscriber> + Send,
) -> PyResult<Subscriber> {
    let policy = TopicPolicy::from_code(policy.0, policy.1)
        .ok_or_else(|| pyo3::exceptions::PyValueError::new_err(format!("policy {} is not a Policy", policy.0)))?;
    let wait = wait_strategy(wait.0, wait.1)?;
    let subscriber = py.detach(|| subscribe(name, policy))?;
    subscriber.set_wait(wait);
    Ok(Subscriber { subscriber: Mutex::new(Some(Arc::new(subscriber))) })
}

/// The indices of the subscribers that are ready (a read would find a sample or the
/// end), waiting up to `timeout` seconds (None: no limit) for one to be; empty if none was.
#[pyfunction]
#[pyo3(signature = (subscribers, timeout=None))]
pub(crate) fn wait_any(
    py: Python<'_>,
    subscribers: Vec<PyRef<'_, Subscriber>>,
    timeout: Option<f64>,
) -> PyResult<Vec<usize>> {
    let timeout = match timeout {
        None => cellshm::FOREVER,
        Some(t) => timeout_or_forever(t, "timeout")?,
    };
    let subscribers: Vec<Arc<CoreSubscriber>> = subscribers.iter().map(|s| s.get()).collect::<PyResult<_>>()?;
    Ok(py.detach(|| {
        let mut set = cellshm::WaitSet::new();
        for subscriber in &subscribers {
            set.add(subscriber);
        }
        set.wait(timeout)
    }))
}

/// A topic's publishing end.
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct Publisher {
    publisher: Mutex<Option<CorePublisher>>,
}

impl Publisher {
    fn get(&self) -> PyResult<CorePublisher> {
        self.publisher.lock().clone().ok_or_else(|| closed("publisher"))
    }
}

#[pymethods]
impl Publisher {
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.get()?.name().to_string())
    }

    #[getter]
    fn sample_size(&self) -> PyResult<usize> {
        Ok(self.get()?.sample_size())
    }

    #[getter]
    fn subscribers(&self) -> PyResult<usize> {
        Ok(self.get()?.subscribers())
    }

    /// Waits up to `timeout` seconds until exactly `count` subscribers are attached.
    fn wait_for_subscribers(&self, py: Python<'_>, count: usize, timeout: f64) -> PyResult<()> {
        let timeout = timeout_or_forever(timeout, "timeout")?;
        let publisher = self.get()?;
        py.detach(|| publisher.wait_for_subscribers(count, timeout)).map_err(err)
    }

    /// Publishes a copy of `data`; its sequence number.
    fn publish(&self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: f64) -> PyResult<u64> {
        let data = payload(Some(data))?;
        let timeout = timeout_or_forever(timeout, "timeout")?;
        let publisher = self.get()?;
        py.detach(|| publisher.publish(data.as_slice(), timeout)).map_err(err)
    }

    /// Loans a slot to write a sample in place.
    fn loan(&self, py: Python<'_>, timeout: f64) -> PyResult<Loan> {
        let timeout = timeout_or_forever(timeout, "timeout")?;
        let publisher = self.get()?;
        release_retained(py);
        let loan = py.detach(|| publisher.loan(timeout)).map_err(err)?;
        Ok(Loan { loan: Mutex::new(Some(loan)), view: Mutex::new(None) })
    }

    /// Closes the topic (once no loan of it is out).
    fn close(&self, py: Python<'_>) {
        if let Some(publisher) = self.publisher.lock().take() {
            py.detach(move || drop(publisher));
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.publisher.lock().is_none()
    }
}

/// Releases `view` (a memoryview this module made); false while something made from it
/// (a slice, a numpy array) still uses its memory.
fn release_view(py: Python<'_>, view: &Py<PyAny>) -> bool {
    view.bind(py).call_method0("release").is_ok()
}

/// A slot loaned from a topic.
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct Loan {
    loan: Mutex<Option<CoreLoan>>,
    view: Mutex<Option<Py<PyAny>>>,
}

impl Loan {
    /// Takes the loan for publishing or discarding, once its view is released:
    /// BufferError while something made from the view is alive.
    fn take(&self, py: Python<'_>) -> PyResult<Option<CoreLoan>> {
        if let Some(view) = self.view.lock().as_ref() {
            if !release_view(py, view) {
                return Err(PyBufferError::new_err(
                    "the loan's buffer is still in use (a slice or array made from it): release it first",
                ));
            }
        }
        self.view.lock().take();
        Ok(self.loan.lock().take())
    }
}

#[pymethods]
impl Loan {
    /// A writable memoryview of the slot (the same one each time), valid until the loan
    /// is published or discarded.
    #[getter]
    fn buffer(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut view = self.view.lock();
        if let Some(view) = view.as_ref() {
            return Ok(view.clone_ref(py));
        }
        let mut loan = self.loan.lock();
        let loan = loan.as_mut().ok_or_else(|| closed("loan"))?;
        let bytes = loan.bytes_mut();
        // SAFETY: a writable view of the loaned slot, which is this loan's alone (no
        // subscriber reads it until it is published) and stays mapped while the loan
        // lives; `take` releases the view before the loan is published or given back, and
        // refuses to while anything made from the view is alive.
        let made = unsafe {
            let raw = pyo3::ffi::PyMemoryView_FromMemory(
                bytes.as_mut_ptr().cast::<std::os::raw::c_char>(),
                bytes.len() as pyo3::ffi::Py_ssize_t,
                PYBUF_WRITE,
            );
            Bound::from_owned_ptr_or_err(py, raw)?.unbind()
        };
        *view = Some(made.clone_ref(py));
        Ok(made)
    }

    #[getter]
    fn seq(&self) -> PyResult<u64> {
        self.loan.lock().as_ref().map(CoreLoan::seq).ok_or_else(|| closed("loan"))
    }

    #[getter]
    fn capacity(&self) -> PyResult<usize> {
        self.loan.lock().as_ref().map(CoreLoan::capacity).ok_or_else(|| closed("loan"))
    }

    /// Publishes the slot's first `len` bytes; the sample's sequence number.
    fn publish(&self, py: Python<'_>, len: usize) -> PyResult<u64> {
        let loan = self.take(py)?.ok_or_else(|| closed("loan"))?;
        py.detach(|| loan.publish(len)).map_err(err)
    }

    /// Gives the slot back unpublished (nothing if it was published already).
    fn discard(&self, py: Python<'_>) -> PyResult<()> {
        let loan = self.take(py)?;
        py.detach(move || drop(loan));
        Ok(())
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        // A view still in use when the loan is collected keeps the loan (unpublished, its
        // memory mapped) until the view can be released.
        let (Some(view), Some(loan)) = (self.view.get_mut().take(), self.loan.get_mut().take()) else { return };
        Python::attach(|py| {
            if !release_view(py, &view) {
                RETAINED.lock().push((view, Box::new(loan)));
            }
        });
    }
}

/// A topic's subscribing end.
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct Subscriber {
    subscriber: Mutex<Option<Arc<CoreSubscriber>>>,
}

impl Subscriber {
    fn get(&self) -> PyResult<Arc<CoreSubscriber>> {
        self.subscriber.lock().clone().ok_or_else(|| closed("subscriber"))
    }
}

/// Samples and loans collected while something made from their view was still alive:
/// kept (a sample's hold, a loan's slot) until the view can be released, which is tried
/// whenever a sample is received or a sample or loan taken.
type Retained = (Py<PyAny>, Box<dyn Send>);
static RETAINED: Mutex<Vec<Retained>> = Mutex::new(Vec::new());

fn release_retained(py: Python<'_>) {
    let mut retained = RETAINED.lock();
    if !retained.is_empty() {
        retained.retain(|(view, _)| !release_view(py, view));
    }
}

#[pymethods]
impl Subscriber {
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.get()?.name().to_string())
    }

    /// The next sample, waiting up to `timeout` seconds (None: no limit); None if none
    /// came; raises the subscription's end.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Sample>> {
        let timeout = match timeout {
            None => cellshm::FOREVER,
            Some(t) => timeout_or_forever(t, "timeout")?,
        };
        let subscriber = self.get()?;
        release_retained(py);
        let sample = py.detach(|| subscriber.recv(timeout)).map_err(err)?;
        Ok(sample.map(Sample::new))
    }

    /// For asyncio, without blocking: (True, the next sample), or (False, None) with
    /// `token` pushed on `notifier` once one may have come; raises the subscription's end.
    fn poll_recv(&self, py: Python<'_>, notifier: &AsyncNotifier, token: u64) -> PyResult<(bool, Option<Sample>)> {
        let subscriber = self.get()?;
        release_retained(py);
        match poll_once(notifier, token, |cx| subscriber.poll_recv(cx)) {
            None => Ok((false, None)),
            Some(Ok(sample)) => Ok((true, Some(Sample::new(sample)))),
            Some(Err(e)) => Err(err(e)),
        }
    }

    /// The newest sample queued, without waiting; None if nothing came since the last read.
    fn latest(&self, py: Python<'_>) -> PyResult<Option<Sample>> {
        let subscriber = self.get()?;
        release_retained(py);
        Ok(py.detach(|| subscriber.latest()).map_err(err)?.map(Sample::new))
    }

    #[getter]
    fn dropped(&self) -> PyResult<u64> {
        Ok(self.get()?.dropped())
    }

    /// Unsubscribes.
    fn close(&self, py: Python<'_>) {
        if let Some(subscriber) = self.subscriber.lock().take() {
            py.detach(move || drop(subscriber));
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.subscriber.lock().is_none()
    }
}

/// One sample, read in place.
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct Sample {
    sample: Mutex<Option<CoreSample>>,
    view: Mutex<Option<Py<PyAny>>>,
    #[pyo3(get)]
    seq: u64,
    #[pyo3(get)]
    missed: u64,
}

impl Sample {
    fn new(sample: CoreSample) -> Sample {
        let (seq, missed) = (sample.seq(), sample.missed());
        Sample { sample: Mutex::new(Some(sample)), view: Mutex::new(None), seq, missed }
    }
}

#[pymethods]
impl Sample {
    /// A read-only memoryview of the sample where it lies (the same one each time),
    /// valid until the sample is released.
    #[getter]
    fn data(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut view = self.view.lock();
        if let Some(view) = view.as_ref() {
            return Ok(view.clone_ref(py));
        }
        let sample = self.sample.lock();
        let sample = sample.as_ref().ok_or_else(|| closed("sample (released)"))?;
        // The view is released before the sample is (`release`, or collected: retained).
        let made = memoryview(py, sample.bytes())?.unbind();
        *view = Some(made.clone_ref(py));
        Ok(made)
    }

    /// A copy of the sample's bytes.
    fn tobytes(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        let sample = self.sample.lock();
        let sample = sample.as_ref().ok_or_else(|| closed("sample (released)"))?;
        bytes_of(py, sample.bytes())
    }

    fn __len__(&self) -> usize {
        self.sample.lock().as_ref().map_or(0, |s| s.bytes().len())
    }

    /// Lets the publisher use the sample's slot again: BufferError while something made
    /// from `data` is alive.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(view) = self.view.lock().as_ref() {
            if !release_view(py, view) {
                return Err(PyBufferError::new_err(
                    "the sample's data is still in use (a slice or array made from it): release it first",
                ));
            }
        }
        self.view.lock().take();
        let sample = self.sample.lock().take();
        py.detach(move || drop(sample));
        Ok(())
    }

    #[getter]
    fn released(&self) -> bool {
        self.sample.lock().is_none()
    }
}

impl Drop for Sample {
    fn drop(&mut self) {
        let (Some(view), Some(sample)) = (self.view.get_mut().take(), self.sample.get_mut().take()) else { return };
        Python::attach(|py| {
            if !release_view(py, &view) {
                RETAINED.lock().push((view, Box::new(sample)));
            }
        });
    }
}
