// cellshm.hpp: a header-only C++17 wrapper over the C API (include/cellshm.h).
//
// RAII handles (Hub, Peer, Cell, Supervisor, Subscription, Response, Stream, StreamItem) release their C objects; every failing call
// throws cellshm::Error carrying the status and the library's message. Handlers are
// std::function objects; an exception thrown by a handler becomes an error response
// (cellshm::Error keeps its status, anything else is INTERNAL) and never crosses into
// the library.
#ifndef CELLSHM_HPP
#define CELLSHM_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cellshm.h"

namespace cellshm {

/// A failed cellshm call: the status code and the library's message.
class Error : public std::runtime_error {
  public:
    Error(cellshm_status status, const std::string &message)
        : std::runtime_error(std::string(cellshm_status_str(status)) + ": " + message), status_(status),
          message_(message) {}
    cellshm_status status() const noexcept { return status_; }
    const std::string &message() const noexcept { return message_; }

  private:
    cellshm_status status_;
    std::string message_;
};

namespace detail {
inline void check(cellshm_status status) {
    if (status != CELLSHM_OK) {
        throw Error(status, cellshm_last_error_message());
    }
}

struct ResponseFree {
    void operator()(cellshm_response *r) const noexcept { cellshm_response_free(r); }
};
struct PeerFree {
    void operator()(cellshm_peer *p) const noexcept { cellshm_peer_free(p); }
};
struct HubFree {
    void operator()(cellshm_hub *h) const noexcept { cellshm_hub_free(h); }
};
struct CellFree {
    void operator()(cellshm_cell *c) const noexcept { cellshm_cell_free(c); }
};
struct StreamFree {
    void operator()(cellshm_stream *s) const noexcept { cellshm_stream_free(s); }
};
struct StreamItemFree {
    void operator()(cellshm_stream_item *i) const noexcept { cellshm_stream_item_free(i); }
};
struct SupervisorFree {
    void operator()(cellshm_supervisor *s) const noexcept { cellshm_supervisor_free(s); }
};
struct SubscriptionFree {
    void operator()(cellshm_subscription *s) const noexcept { cellshm_subscription_free(s); }
};

/// argv or envp for the C API: pointers into `strings`, NULL-terminated.
inline std::vector<const char *> c_list(const std::vector<std::string> &strings) {
    std::vector<const char *> list;
    for (const auto &s : strings) list.push_back(s.c_str());
    list.push_back(nullptr);
    return list;
}

inline cellshm_call_options options_for(std::chrono::milliseconds timeout) {
    cellshm_call_options options{};
    options.timeout_ms = timeout == std::chrono::milliseconds::max() ? CELLSHM_TIMEOUT_FOREVER
                                                                     : static_cast<uint64_t>(timeout.count());
    return options;
}
} // namespace detail

/// A timeout that means "no limit" (waiting forever is never the default: a timeout of 0
/// means the peer's default, 30 s unless configured).
constexpr std::chrono::milliseconds forever = std::chrono::milliseconds::max();

/// A handler: gets the request bytes, returns the reply bytes, or throws.
using Handler = std::function<std::string(std::string_view request)>;

namespace detail {
inline uint32_t trampoline(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) noexcept {
    try {
        const Handler &handler = *static_cast<const Handler *>(userdata);
        std::string answer = handler(std::string_view(reinterpret_cast<const char *>(request), len));
        return cellshm_reply_write(reply, reinterpret_cast<const uint8_t *>(answer.data()), answer.size());
    } catch (const Error &e) {
        cellshm_reply_error_message(reply, e.message().c_str());
        return e.status();
    } catch (const std::exception &e) {
        cellshm_reply_error_message(reply, e.what());
        return CELLSHM_INTERNAL;
    } catch (...) {
        cellshm_reply_error_message(reply, "a C++ handler threw a non-standard exception");
        return CELLSHM_INTERNAL;
    }
}

inline void delete_handler(void *userdata) noexcept { delete static_cast<Handler *>(userdata); }
} // namespace detail

/// A response; its bytes live in shared memory until the Response is destroyed.
class Response {
  public:
    explicit Response(cellshm_response *raw) : raw_(raw) {}
    const uint8_t *data() const noexcept { return cellshm_response_data(raw_.get()); }
    size_t size() const noexcept { return cellshm_response_len(raw_.get()); }
    std::string_view view() const noexcept { return {reinterpret_cast<const char *>(data()), size()}; }
    std::string str() const { return std::string(view()); }

  private:
    std::unique_ptr<cellshm_response, detail::ResponseFree> raw_;
};

/// One item of a stream, read in place; destroying it returns its slot and lets the
/// sender send one more.
class StreamItem {
  public:
    explicit StreamItem(cellshm_stream_item *raw) : raw_(raw) {}
    const uint8_t *data() const noexcept { return cellshm_stream_item_data(raw_.get()); }
    size_t size() const noexcept { return cellshm_stream_item_len(raw_.get()); }
    std::string_view view() const noexcept { return {reinterpret_cast<const char *>(data()), size()}; }
    std::string str() const { return std::string(view()); }

  private:
    std::unique_ptr<cellshm_stream_item, detail::StreamItemFree> raw_;
};

/// The caller's end of a stream. Destroying it before the stream ended cancels it.
class Stream {
  public:
    explicit Stream(cellshm_stream *raw) : raw_(raw) {}

    /// The next item, or std::nullopt once the handler finished; throws its error.
    std::optional<StreamItem> next() {
        cellshm_stream_item *item = nullptr;
        detail::check(cellshm_stream_next(raw_.get(), &item));
        if (item == nullptr) return std::nullopt;
        return StreamItem(item);
    }

    void send(std::string_view item) {
        detail::check(cellshm_stream_send(raw_.get(), reinterpret_cast<const uint8_t *>(item.data()), item.size()));
    }

    void close_send() { detail::check(cellshm_stream_close_send(raw_.get())); }

    /// Closes sending and returns the handler's response (client streaming).
    Response finish() {
        cellshm_response *out = nullptr;
        detail::check(cellshm_stream_finish(raw_.get(), &out));
        return Response(out);
    }

    void cancel() noexcept { cellshm_stream_cancel(raw_.get()); }

  private:
    std::unique_ptr<cellshm_stream, detail::StreamFree> raw_;
};

/// The handler's end of a stream, valid during the stream handler call.
class StreamCall {
  public:
    explicit StreamCall(cellshm_stream_call *raw) : raw_(raw) {}

    /// Sends one item; waits while the caller's window is full. Throws CANCELLED once
    /// the caller gave up.
    void send(std::string_view item) {
        detail::check(cellshm_stream_call_send(raw_, reinterpret_cast<const uint8_t *>(item.data()), item.size()));
    }

    /// The caller's next item, or std::nullopt once it closed its sending side.
    std::optional<StreamItem> next() {
        cellshm_stream_item *item = nullptr;
        detail::check(cellshm_stream_call_next(raw_, &item));
        if (item == nullptr) return std::nullopt;
        return StreamItem(item);
    }

    bool cancelled() const noexcept { return cellshm_stream_call_cancelled(raw_) != 0; }

  private:
    cellshm_stream_call *raw_;
};

/// A stream handler: gets the opening request and the call; returns the final
/// response (empty for a pure server stream), or throws to end the stream with an error.
using StreamHandler = std::function<std::string(std::string_view request, StreamCall &call)>;

namespace detail {
inline uint32_t stream_trampoline(void *userdata, const uint8_t *request, size_t len,
                                  cellshm_stream_call *raw) noexcept {
    try {
        const StreamHandler &handler = *static_cast<const StreamHandler *>(userdata);
        StreamCall call(raw);
        std::string answer = handler(std::string_view(reinterpret_cast<const char *>(request), len), call);
        return cellshm_stream_call_set_response(raw, reinterpret_cast<const uint8_t *>(answer.data()), answer.size());
    } catch (const Error &e) {
        cellshm_stream_call_error_message(raw, e.message().c_str());
        return e.status();
    } catch (const std::exception &e) {
        cellshm_stream_call_error_message(raw, e.what());
        return CELLSHM_INTERNAL;
    } catch (...) {
        cellshm_stream_call_error_message(raw, "a C++ stream handler threw a non-standard exception");
        return CELLSHM_INTERNAL;
    }
}

inline void delete_stream_handler(void *userdata) noexcept { delete static_cast<StreamHandler *>(userdata); }
} // namespace detail

/// The host's handle on one cell. Methods are thread-safe.
class Peer {
  public:
    explicit Peer(cellshm_peer *raw) : raw_(raw) {}

    void wait_ready(std::chrono::milliseconds timeout) {
        detail::check(cellshm_peer_wait_ready(raw_.get(), static_cast<uint64_t>(timeout.count())));
    }

    Response call(const char *method, std::string_view request,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const {
        cellshm_call_options options = detail::options_for(timeout);
        cellshm_response *out = nullptr;
        detail::check(cellshm_peer_call(raw_.get(), method, reinterpret_cast<const uint8_t *>(request.data()),
                                        request.size(), &options, &out));
        return Response(out);
    }

    /// Opens a stream to the cell's stream method; `timeout` covers the whole stream.
    Stream open_stream(const char *method, std::string_view request,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const {
        cellshm_call_options options = detail::options_for(timeout);
        cellshm_stream *out = nullptr;
        detail::check(cellshm_peer_open_stream(raw_.get(), method, reinterpret_cast<const uint8_t *>(request.data()),
                                               request.size(), &options, &out));
        return Stream(out);
    }

    void notify(const char *method, std::string_view request) const {
        detail::check(cellshm_peer_notify(raw_.get(), method, reinterpret_cast<const uint8_t *>(request.data()),
                                          request.size()));
    }

    uint32_t pid() const noexcept { return cellshm_peer_pid(raw_.get()); }

    /// GOODBYE, a grace period, then SIGKILL; returns the exit code.
    int shutdown(std::chrono::milliseconds grace) {
        int code = -1;
        detail::check(cellshm_peer_shutdown(raw_.get(), static_cast<uint64_t>(grace.count())));
        detail::check(cellshm_peer_wait_exit(raw_.get(), 0, &code));
        return code;
    }

  private:
    std::unique_ptr<cellshm_peer, detail::PeerFree> raw_;
};

/// Receives log records: the hub's cells' and the library's own notices (`notice`).
/// Every pointer in the record is valid during the call only. An exception it throws is
/// dropped (the record is lost, nothing else).
using LogSink = std::function<void(const cellshm_log_record &)>;

namespace detail {
inline void log_trampoline(void *userdata, const cellshm_log_record *record) noexcept {
    try {
        (*static_cast<const LogSink *>(userdata))(*record);
    } catch (...) {
    }
}

inline void delete_log_sink(void *userdata) noexcept { delete static_cast<LogSink *>(userdata); }
} // namespace detail

/// The host's hub. Freed (cells told to leave, file removed) on destruction.
class Hub {
  public:
    explicit Hub(const char *name = nullptr, uint32_t max_peers = 0) {
        cellshm_hub *raw = nullptr;
        detail::check(cellshm_hub_new(name, max_peers, &raw));
        raw_.reset(raw);
    }

    /// A hub shaped by `options` (start from cellshm_hub_options_default()).
    Hub(const char *name, const cellshm_hub_options &options) {
        cellshm_hub *raw = nullptr;
        detail::check(cellshm_hub_new_with(name, &options, &raw));
        raw_.reset(raw);
    }

    std::string name() const { return cellshm_hub_name(raw_.get()); }

    /// Serves `name` to every cell of this hub.
    void method(const char *name, Handler handler) {
        auto *owned = new Handler(std::move(handler));
        // On failure the library has already released `owned` through delete_handler.
        detail::check(cellshm_hub_register(raw_.get(), name, detail::trampoline, owned, detail::delete_handler));
    }

    /// Serves the stream method `name` to every cell of this hub; `kind` (not
    /// CELLSHM_METHOD_UNARY) is what cellshm.Introspect.methods reports.
    void stream_method(const char *name, StreamHandler handler, cellshm_method_kind kind = CELLSHM_METHOD_STREAM) {
        auto *owned = new StreamHandler(std::move(handler));
        detail::check(cellshm_hub_register_stream_kind(raw_.get(), name, kind, detail::stream_trampoline, owned,
                                                       detail::delete_stream_handler));
    }
    /// Keeps a serialized google.protobuf.FileDescriptorSet describing the services
    /// served (generated serve_* functions pass theirs): reflection through a gRPC gateway.
    void describe(const unsigned char *set, std::size_t size) {
        detail::check(cellshm_hub_describe(raw_.get(), set, size));
    }

    /// Sends the cells' log records and the library's notices to `sink`.
    void set_log_sink(LogSink sink) {
        auto *owned = new LogSink(std::move(sink));
        detail::check(cellshm_hub_set_log_sink(raw_.get(), detail::log_trampoline, owned, detail::delete_log_sink));
    }

    /// Only the cells named in `cells` may call the host method `method` (registered
    /// already); others get CELLSHM_PERMISSION_DENIED and the handler never runs.
    void allow(const char *method, const std::vector<std::string> &cells) {
        auto list = detail::c_list(cells);
        detail::check(cellshm_hub_allow(raw_.get(), method, list.data()));
    }

    /// Spawns `program` with `args` (its arguments after argv[0], which is `program`; the
    /// hub adds none) and extra `env` entries.
    Peer spawn(const char *name, const std::string &program, const std::vector<std::string> &args = {},
               const std::vector<std::string> &env = {}) {
        auto argv = detail::c_list(args);
        auto envp = detail::c_list(env);
        cellshm_peer *out = nullptr;
        detail::check(cellshm_hub_spawn(raw_.get(), name, program.c_str(), argv.data(), envp.data(), nullptr, &out));
        return Peer(out);
    }

  private:
    std::unique_ptr<cellshm_hub, detail::HubFree> raw_;
};

/// A cell. Register methods, then run().
class Cell {
  public:
    /// Joins the hub that spawned this process (its doorbell is in CELLSHM_DOORBELL_FD;
    /// argv is only searched for a `--doorbell-fd=N` the host may have been asked to add).
    Cell(int argc, char **argv) {
        cellshm_cell *raw = nullptr;
        detail::check(cellshm_cell_new(argc, const_cast<const char *const *>(argv), &raw));
        raw_.reset(raw);
    }

    /// Joins the running hub `hub` (its name, or "UID/NAME") by attaching as `name`.
    static Cell attach(const char *hub, const char *name) {
        cellshm_cell *raw = nullptr;
        detail::check(cellshm_cell_attach(hub, name, &raw));
        return Cell(raw);
    }

    void method(const char *name, Handler handler) {
        auto *owned = new Handler(std::move(handler));
        detail::check(cellshm_cell_register(raw_.get(), name, detail::trampoline, owned, detail::delete_handler));
    }

    /// Serves the stream method `name`; `kind` as for Hub::stream_method.
    void stream_method(const char *name, StreamHandler handler, cellshm_method_kind kind = CELLSHM_METHOD_STREAM) {
        auto *owned = new StreamHandler(std::move(handler));
        detail::check(cellshm_cell_register_stream_kind(raw_.get(), name, kind, detail::stream_trampoline, owned,
                                                        detail::delete_stream_handler));
    }
    /// Keeps a serialized google.protobuf.FileDescriptorSet describing the services
    /// served (generated serve_* functions pass theirs): the host's gRPC gateway answers
    /// reflection from it.
    void describe(const unsigned char *set, std::size_t size) {
        detail::check(cellshm_cell_describe(raw_.get(), set, size));
    }

    /// Serves until the host says goodbye.
    void run() { detail::check(cellshm_cell_run(raw_.get())); }

    Response call(const char *method, std::string_view request,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const {
        cellshm_call_options options = detail::options_for(timeout);
        cellshm_response *out = nullptr;
        detail::check(cellshm_cell_call(raw_.get(), method, reinterpret_cast<const uint8_t *>(request.data()),
                                        request.size(), &options, &out));
        return Response(out);
    }

    void log(const std::string &line) const { detail::check(cellshm_cell_log(raw_.get(), line.c_str())); }

  private:
    explicit Cell(cellshm_cell *raw) { raw_.reset(raw); }
    std::unique_ptr<cellshm_cell, detail::CellFree> raw_;
};

/// Where a supervised cell is (the CELLSHM_CELL_* numbers).
enum class CellStatus : uint32_t {
    Starting = CELLSHM_CELL_STARTING,
    Ready = CELLSHM_CELL_READY,
    Stopping = CELLSHM_CELL_STOPPING,
    Exited = CELLSHM_CELL_EXITED,
    Crashed = CELLSHM_CELL_CRASHED,
    Failed = CELLSHM_CELL_FAILED,
    Removed = CELLSHM_CELL_REMOVED,
    Unavailable = CELLSHM_CELL_UNAVAILABLE,
};

/// A status change of one supervised cell; `reason` is empty unless it ended.
struct CellEvent {
    std::string name;
    CellStatus status;
    std::string reason;
};

/// Gets every CellEvent. An exception it throws is reported on stderr and goes no
/// further: the supervisor and the other listeners carry on.
using EventListener = std::function<void(const CellEvent &)>;

/// A registered EventListener; destroying it unregisters the listener (after the
/// destructor returns it is not called again).
class Subscription {
  public:
    explicit Subscription(cellshm_subscription *raw) : raw_(raw) {}

  private:
    std::unique_ptr<cellshm_subscription, detail::SubscriptionFree> raw_;
};

namespace detail {
inline void event_trampoline(void *userdata, const char *name, uint32_t status, const char *reason) noexcept {
    try {
        const EventListener &listener = *static_cast<const EventListener *>(userdata);
        listener(CellEvent{name, static_cast<CellStatus>(status), reason});
    } catch (const std::exception &e) {
        std::fprintf(stderr, "cellshm: a supervisor listener threw: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "cellshm: a supervisor listener threw a non-standard exception\n");
    }
}

inline void delete_listener(void *userdata) noexcept { delete static_cast<EventListener *>(userdata); }

} // namespace detail

/// The recipe of a supervised cell.
struct CellSpec {
    std::string name;
    std::string program;
    std::vector<std::string> args;
    /// "KEY=VALUE" entries added to the inherited environment.
    std::vector<std::string> env;
    cellshm_restart_policy policy = cellshm_restart_policy_default();
};

/// Keeps cells alive under stable names: relaunch on crash with backoff, graceful stop,
/// restart, removal and new recipes. Thread-safe. Destroying it stops every cell.
class Supervisor {
  public:
    explicit Supervisor(const char *name = nullptr, uint32_t max_peers = 0) {
        cellshm_supervisor *raw = nullptr;
        detail::check(cellshm_supervisor_new(name, max_peers, &raw));
        raw_.reset(raw);
    }

    /// The time limit of calls to the cells launched from now on whose options set none
    /// (cellshm::forever: no limit), unless their policy's default_timeout_ms says otherwise.
    void set_default_timeout(std::chrono::milliseconds timeout) {
        detail::check(cellshm_supervisor_set_default_timeout(
            raw_.get(), timeout == forever ? CELLSHM_TIMEOUT_FOREVER : static_cast<uint64_t>(timeout.count())));
    }

    /// Calls `listener` with every event, in order, on the supervisor's event thread.
    /// Keep the Subscription: destroying it unregisters the listener.
    [[nodiscard]] Subscription on_event(EventListener listener) {
        auto *owned = new EventListener(std::move(listener));
        cellshm_subscription *out = nullptr;
        // On failure the library has already released `owned` through delete_listener.
        detail::check(
            cellshm_supervisor_on_event(raw_.get(), detail::event_trampoline, owned, detail::delete_listener, &out));
        return Subscription(out);
    }

    /// Adds a cell and starts it (Error ALREADY_EXISTS if the name is taken).
    void add(const CellSpec &spec) {
        auto argv = detail::c_list(spec.args);
        auto envp = detail::c_list(spec.env);
        detail::check(cellshm_supervisor_add(raw_.get(), spec.name.c_str(), spec.program.c_str(), argv.data(),
                                             envp.data(), &spec.policy));
    }

    /// Replaces the recipe of `spec.name`; a running instance is restarted with it.
    void update(const CellSpec &spec, std::chrono::milliseconds grace = std::chrono::seconds(2)) {
        auto argv = detail::c_list(spec.args);
        auto envp = detail::c_list(spec.env);
        detail::check(cellshm_supervisor_update(raw_.get(), spec.name.c_str(), spec.program.c_str(), argv.data(),
                                                envp.data(), &spec.policy, static_cast<uint64_t>(grace.count())));
    }

    /// Starts a cell that is not running (exited, stopped, failed) again.
    void start(const std::string &name) { detail::check(cellshm_supervisor_start(raw_.get(), name.c_str())); }

    /// Stops the running instance and starts a new one.
    void restart(const std::string &name, std::chrono::milliseconds grace = std::chrono::seconds(2)) {
        detail::check(cellshm_supervisor_restart(raw_.get(), name.c_str(), static_cast<uint64_t>(grace.count())));
    }

    /// Stops the cell (GOODBYE, SIGTERM, SIGKILL, `grace` each); returns its exit code.
    int stop(const std::string &name, std::chrono::milliseconds grace = std::chrono::seconds(2)) {
        int code = 0;
        detail::check(cellshm_supervisor_stop(raw_.get(), name.c_str(), static_cast<uint64_t>(grace.count()), &code));
        return code;
    }

    /// Stops the cell and forgets it (its last event is CellStatus::Removed).
    void remove(const std::string &name, std::chrono::milliseconds grace = std::chrono::seconds(2)) {
        detail::check(cellshm_supervisor_remove(raw_.get(), name.c_str(), static_cast<uint64_t>(grace.count())));
    }

    CellStatus status(const std::string &name) const {
        uint32_t status = 0;
        detail::check(cellshm_supervisor_status(raw_.get(), name.c_str(), &status));
        return static_cast<CellStatus>(status);
    }

    /// Waits until the cell has `status` and the listeners have seen it.
    void wait_for(const std::string &name, CellStatus status, std::chrono::milliseconds timeout) const {
        detail::check(cellshm_supervisor_wait_status(raw_.get(), name.c_str(), static_cast<uint32_t>(status),
                                                     static_cast<uint64_t>(timeout.count())));
    }

    /// The current instance's process id (0 if none runs).
    uint32_t pid(const std::string &name) const noexcept { return cellshm_supervisor_pid(raw_.get(), name.c_str()); }

    /// Calls the current instance of `cell` (Error UNAVAILABLE while it restarts).
    Response call(const std::string &cell, const char *method, std::string_view request,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const {
        cellshm_call_options options = detail::options_for(timeout);
        cellshm_response *out = nullptr;
        detail::check(cellshm_supervisor_call(raw_.get(), cell.c_str(), method,
                                              reinterpret_cast<const uint8_t *>(request.data()), request.size(),
                                              &options, &out));
        return Response(out);
    }

  private:
    std::unique_ptr<cellshm_supervisor, detail::SupervisorFree> raw_;
};

} // namespace cellshm

#endif
