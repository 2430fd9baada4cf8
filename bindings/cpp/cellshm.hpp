// cellshm.hpp: a header-only C++17 wrapper over the C API (include/cellshm.h).
//
// RAII handles (Hub, Peer, Cell, Supervisor, Subscription, Response, Stream, StreamItem,
// Publisher, Loan, Subscriber, Sample) release their C objects; every failing call
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
#include <iterator>
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
struct PublisherFree {
    void operator()(cellshm_publisher *p) const noexcept { cellshm_publisher_free(p); }
};
struct LoanFree {
    void operator()(cellshm_loan *l) const noexcept { cellshm_loan_free(l); }
};
struct SubscriberFree {
    void operator()(cellshm_subscriber *s) const noexcept { cellshm_subscriber_free(s); }
};
struct SampleFree {
    void operator()(cellshm_sample *s) const noexcept { cellshm_sample_free(s); }
};

/// argv or envp for the C API: pointers into `strings`, NULL-terminated.
inline std::vector<const char *> c_list(const std::vector<std::string> &strings) {
    std::vector<const char *> list;
    for (const auto &s : strings) list.push_back(s.c_str());
    list.push_back(nullptr);
    return list;
}

inline cellshm_call_options options_for(std::chrono::milliseconds timeout) {
    cellshm_call_options options = cellshm_call_options_default();
    options.timeout_ms = timeout == std::chrono::milliseconds::max() ? CELLSHM_TIMEOUT_FOREVER
                                                                     : static_cast<uint64_t>(timeout.count());
    return options;
}
} // namespace detail

/// A timeout that means "no limit" (waiting forever is never the default: a timeout of 0
/// means the peer's default, 30 s unless configured).
constexpr std::chrono::milliseconds forever = std::chrono::milliseconds::max();

// ----- publish/subscribe ---------------------------------------------------------------

/// What a subscriber's full queue does (the CELLSHM_TOPIC_* numbers).
enum class TopicPolicy : uint32_t {
    /// The publisher waits (up to its publish timeout) until this subscriber reads.
    Block = CELLSHM_TOPIC_BLOCK,
    /// The oldest unread sample is overwritten; the next sample read says how many went.
    DropOldest = CELLSHM_TOPIC_DROP_OLDEST,
    /// The new sample is not queued for this subscriber.
    DropNewest = CELLSHM_TOPIC_DROP_NEWEST,
    /// A subscriber `disconnect_after` samples behind is detached (its next read throws
    /// RESOURCE_EXHAUSTED).
    DisconnectAfter = CELLSHM_TOPIC_DISCONNECT_AFTER,
};

/// How a subscription behaves: its policy, and how Subscriber::next waits.
struct SubscribeOptions {
    TopicPolicy policy = TopicPolicy::DropOldest;
    uint32_t disconnect_after = 0;
    /// CELLSHM_WAIT_ADAPTIVE (poll `spin_us`, then sleep), CELLSHM_WAIT_SPIN, CELLSHM_WAIT_BLOCK.
    uint32_t wait = CELLSHM_WAIT_ADAPTIVE;
    uint32_t spin_us = 50;
};

/// One sample, read in place from the publisher's memory; destroying it lets the
/// publisher reuse its slot (a subscriber holds at most the topic's max_borrowed).
class Sample {
  public:
    explicit Sample(cellshm_sample *raw) : raw_(raw) {}
    const uint8_t *data() const noexcept { return cellshm_sample_data(raw_.get()); }
    size_t size() const noexcept { return cellshm_sample_len(raw_.get()); }
    std::string_view view() const noexcept { return {reinterpret_cast<const char *>(data()), size()}; }
    std::string str() const { return std::string(view()); }
    /// 1 for the topic's first sample, one more for each after.
    uint64_t seq() const noexcept { return cellshm_sample_seq(raw_.get()); }
    /// Samples this subscriber missed just before this one.
    uint64_t missed() const noexcept { return cellshm_sample_missed(raw_.get()); }

  private:
    std::unique_ptr<cellshm_sample, detail::SampleFree> raw_;
};

/// A slot loaned from a topic, written in place through data(), then publish()ed;
/// destroyed unpublished, it goes back. Other publishes of the topic wait while it is out.
class Loan {
  public:
    explicit Loan(cellshm_loan *raw) : raw_(raw) {}
    uint8_t *data() noexcept { return cellshm_loan_data(raw_.get()); }
    size_t capacity() const noexcept { return cellshm_loan_capacity(raw_.get()); }
    /// The sequence number the sample gets when published.
    uint64_t seq() const noexcept { return cellshm_loan_seq(raw_.get()); }

    /// Publishes the first `len` bytes; the sample's sequence number. The loan is spent
    /// either way (a `len` past capacity() throws INVALID_ARGUMENT, the slot goes back).
    uint64_t publish(size_t len) {
        uint64_t seq = 0;
        detail::check(cellshm_loan_publish(raw_.release(), len, &seq));
        return seq;
    }

  private:
    std::unique_ptr<cellshm_loan, detail::LoanFree> raw_;
};

/// A topic's publishing end (Hub::publish, Cell::publish, Supervisor::publish). Any
/// thread may publish. Destroying it closes the topic: subscribers read what was
/// queued, then their next() ends.
class Publisher {
  public:
    explicit Publisher(cellshm_publisher *raw) : raw_(raw) {}

    /// Publishes a copy of `sample`; its sequence number. `timeout` bounds the wait for a
    /// Block subscriber's full queue (then DEADLINE_EXCEEDED and nobody got it).
    uint64_t publish(std::string_view sample, std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) {
        uint64_t seq = 0;
        detail::check(cellshm_publisher_publish(raw_.get(), reinterpret_cast<const uint8_t *>(sample.data()),
                                                sample.size(), detail::options_for(timeout).timeout_ms, &seq));
        return seq;
    }

    /// A slot to write a sample in place.
    Loan loan(std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) {
        cellshm_loan *out = nullptr;
        detail::check(cellshm_publisher_loan(raw_.get(), detail::options_for(timeout).timeout_ms, &out));
        return Loan(out);
    }

    /// Subscribers attached now.
    size_t subscribers() const noexcept { return cellshm_publisher_subscribers(raw_.get()); }

    /// Waits up to `timeout` until exactly `count` subscribers are attached; throws
    /// DEADLINE_EXCEEDED otherwise.
    void wait_for_subscribers(size_t count, std::chrono::milliseconds timeout) {
        detail::check(
            cellshm_publisher_wait_subscribers(raw_.get(), count, detail::options_for(timeout).timeout_ms));
    }

  private:
    std::unique_ptr<cellshm_publisher, detail::PublisherFree> raw_;
};

/// A topic's subscribing end (Hub::subscribe, Cell::subscribe, Supervisor::subscribe).
/// One thread reads it at a time; destroying it unsubscribes. Iterate it
/// (`for (cellshm::Sample &s : subscriber)`) to read until the topic is closed.
class Subscriber {
  public:
    explicit Subscriber(cellshm_subscriber *raw) : raw_(raw) {}

    /// The next sample, waiting up to `timeout`; std::nullopt if none came. Throws the
    /// subscription's end: UNAVAILABLE once the topic was closed (what was queued read
    /// first), PEER_DEAD when its publisher died, RESOURCE_EXHAUSTED when detached.
    std::optional<Sample> next(std::chrono::milliseconds timeout = forever) {
        cellshm_sample *out = nullptr;
        detail::check(cellshm_subscriber_next(raw_.get(), detail::options_for(timeout).timeout_ms, &out));
        if (out == nullptr) return std::nullopt;
        return Sample(out);
    }

    /// The newest sample queued, without waiting (what it skipped counts in its
    /// missed()); std::nullopt when nothing came since the last read. For last-value
    /// topics (cellshm_topic_options_last_value).
    std::optional<Sample> latest() {
        cellshm_sample *out = nullptr;
        detail::check(cellshm_subscriber_latest(raw_.get(), &out));
        if (out == nullptr) return std::nullopt;
        return Sample(out);
    }

    /// Samples the publisher could not queue for this subscriber so far.
    uint64_t dropped() const noexcept { return cellshm_subscriber_dropped(raw_.get()); }

    /// Reads samples until the topic is closed (other ends throw).
    class iterator {
      public:
        using iterator_category = std::input_iterator_tag;
        using value_type = Sample;
        using difference_type = std::ptrdiff_t;
        using pointer = Sample *;
        using reference = Sample &;

        iterator() = default;
        explicit iterator(Subscriber *subscriber) : subscriber_(subscriber) { ++*this; }
        Sample &operator*() { return *current_; }
        Sample *operator->() { return &*current_; }
        iterator &operator++() {
            current_.reset();  // the previous sample goes back first
            try {
                current_ = subscriber_->next(forever);
            } catch (const Error &e) {
                if (e.status() != CELLSHM_UNAVAILABLE) throw;
            }
            if (!current_) subscriber_ = nullptr;
            return *this;
        }
        bool operator==(const iterator &other) const noexcept { return subscriber_ == other.subscriber_; }
        bool operator!=(const iterator &other) const noexcept { return !(*this == other); }

      private:
        Subscriber *subscriber_ = nullptr;
        std::optional<Sample> current_;
    };

    iterator begin() { return iterator(this); }
    iterator end() { return iterator(); }

  private:
    std::unique_ptr<cellshm_subscriber, detail::SubscriberFree> raw_;
};

namespace detail {
/// Hub::publish, Cell::publish and Supervisor::publish, through their C function.
template <typename Owner>
Publisher publish_on(cellshm_status (*publish)(const Owner *, const char *, const cellshm_topic_options *,
                                                cellshm_publisher **),
                     const Owner *owner, const char *topic, const cellshm_topic_options &options) {
    cellshm_publisher *out = nullptr;
    check(publish(owner, topic, &options, &out));
    return Publisher(out);
}

/// Hub::subscribe, Cell::subscribe and Supervisor::subscribe, through their C function.
template <typename Owner>
Subscriber subscribe_on(cellshm_status (*subscribe)(const Owner *, const char *, const cellshm_subscriber_options *,
                                                     cellshm_subscriber **),
                        const Owner *owner, const char *topic, const SubscribeOptions &options) {
    cellshm_subscriber_options c = cellshm_subscriber_options_default();
    c.policy = static_cast<uint32_t>(options.policy);
    c.disconnect_after = options.disconnect_after;
    c.wait = options.wait;
    c.spin_us = options.spin_us;
    cellshm_subscriber *out = nullptr;
    check(subscribe(owner, topic, &c, &out));
    return Subscriber(out);
}
} // namespace detail

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
    /// Creates topic `topic`, published from here (start `options` from
    /// cellshm_topic_options_default()); ALREADY_EXISTS while another of that name lives.
    Publisher publish(const char *topic, const cellshm_topic_options &options = cellshm_topic_options_default()) {
        return detail::publish_on(cellshm_hub_publish, raw_.get(), topic, options);
    }

    /// Subscribes to topic `topic` (published by the host or any cell); NOT_FOUND when no
    /// such topic lives.
    Subscriber subscribe(const char *topic, const SubscribeOptions &options = {}) {
        return detail::subscribe_on(cellshm_hub_subscribe, raw_.get(), topic, options);
    }

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

    /// Creates topic `topic`, published from here (start `options` from
    /// cellshm_topic_options_default()); ALREADY_EXISTS while another of that name lives.
    Publisher publish(const char *topic, const cellshm_topic_options &options = cellshm_topic_options_default()) {
        return detail::publish_on(cellshm_cell_publish, raw_.get(), topic, options);
    }

    /// Subscribes to topic `topic` (published by the host or any cell); NOT_FOUND when no
    /// such topic lives.
    Subscriber subscribe(const char *topic, const SubscribeOptions &options = {}) {
        return detail::subscribe_on(cellshm_cell_subscribe, raw_.get(), topic, options);
    }


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

    /// Creates topic `topic`, published from here (start `options` from
    /// cellshm_topic_options_default()); ALREADY_EXISTS while another of that name lives.
    Publisher publish(const char *topic, const cellshm_topic_options &options = cellshm_topic_options_default()) {
        return detail::publish_on(cellshm_supervisor_publish, raw_.get(), topic, options);
    }

    /// Subscribes to topic `topic` (published by the host or any cell); NOT_FOUND when no
    /// such topic lives.
    Subscriber subscribe(const char *topic, const SubscribeOptions &options = {}) {
        return detail::subscribe_on(cellshm_supervisor_subscribe, raw_.get(), topic, options);
    }


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
