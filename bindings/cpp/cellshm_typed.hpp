// cellshm_typed.hpp: typed calls, streams and topics over protobuf's C++ messages, what the
// headers `cellshm-codegen --lang cpp` writes are made of (C++17, over cellshm.hpp).
//
// A service method `pkg.Svc/Method` is the cellshm method "pkg.Svc.Method"; requests and
// responses are protobuf messages serialized into the payload. A message that does not
// parse throws cellshm::Error with CELLSHM_INTERNAL on the side that received it. The
// templates need only `SerializeAsString`, `ParseFromArray` and `GetTypeName` of a
// message, so this header does not include protobuf's.
#ifndef CELLSHM_TYPED_HPP
#define CELLSHM_TYPED_HPP

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "cellshm.hpp"

namespace cellshm {
namespace typed {

/// The messages of a direction that carries none (the caller's side of a server
/// stream, the handler's side of a client stream).
struct Nothing {};

/// Parses `data` as an `M`; CELLSHM_INTERNAL naming the method and type if it is not one.
template <class M> M decode(std::string_view data, const char *method) {
    M message;
    if (!message.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
        throw Error(CELLSHM_INTERNAL, std::string(method) + ": could not decode " + message.GetTypeName());
    }
    return message;
}

/// A unary call through a caller with `call(method, bytes, timeout)`.
template <class Resp, class Caller, class Req>
Resp unary(const Caller &caller, const char *method, const Req &request, std::chrono::milliseconds timeout) {
    Response response = caller.call(method, request.SerializeAsString(), timeout);
    return decode<Resp>(response.view(), method);
}

/// The responses of a server-streaming call (or a bidi call's receiving side).
/// Destroying it before the end cancels the call.
template <class Resp> class Streaming {
  public:
    Streaming(Stream stream, const char *method) : stream_(std::move(stream)), method_(method) {}

    /// The next response, or std::nullopt once the handler finished; throws its error.
    std::optional<Resp> next() {
        std::optional<StreamItem> item = stream_.next();
        if (!item) return std::nullopt;
        return decode<Resp>(item->view(), method_);
    }

    void cancel() noexcept { stream_.cancel(); }

  protected:
    Stream stream_;
    const char *method_;
};

/// A client-streaming call: send() the requests, then finish() for the response.
template <class Req, class Resp> class ClientStreaming {
  public:
    ClientStreaming(Stream stream, const char *method) : stream_(std::move(stream)), method_(method) {}

    /// Sends one request; waits while the handler's window is full.
    void send(const Req &request) { stream_.send(request.SerializeAsString()); }

    /// Ends the requests and returns the handler's response.
    Resp finish() {
        Response response = stream_.finish();
        return decode<Resp>(response.view(), method_);
    }

    void cancel() noexcept { stream_.cancel(); }

  private:
    Stream stream_;
    const char *method_;
};

/// A bidi call: send() and next() in any order, close_send() once no more follow.
template <class Req, class Resp> class Bidi : public Streaming<Resp> {
  public:
    Bidi(Stream stream, const char *method) : Streaming<Resp>(std::move(stream), method) {}

    void send(const Req &request) { this->stream_.send(request.SerializeAsString()); }
    void close_send() { this->stream_.close_send(); }
};

/// A stream handler's typed end: `In` is what the caller sends (Nothing for a server
/// stream), `Out` what the handler sends (Nothing for a client stream).
template <class In, class Out> class ServerStream {
  public:
    ServerStream(StreamCall &call, const char *method) : call_(call), method_(method) {}

    /// Sends one message; waits while the caller's window is full, throws CANCELLED once
    /// it gave up.
    template <class O = Out> void send(const O &message) { call_.send(message.SerializeAsString()); }

    /// The caller's next message, or std::nullopt once it closed its sending side.
    template <class I = In> std::optional<I> next() {
        std::optional<StreamItem> item = call_.next();
        if (!item) return std::nullopt;
        return decode<I>(item->view(), method_);
    }

    bool cancelled() const noexcept { return call_.cancelled(); }

  private:
    StreamCall &call_;
    const char *method_;
};

/// Publishes messages of type `M` on a topic (a Publisher from Hub/Cell/Supervisor::publish).
template <class M> class TypedPublisher {
  public:
    explicit TypedPublisher(Publisher publisher) : publisher_(std::move(publisher)) {}

    /// Serializes `message` and publishes it; its sequence number (INVALID_ARGUMENT past
    /// the topic's sample size).
    uint64_t publish(const M &message, std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) {
        return publisher_.publish(message.SerializeAsString(), timeout);
    }

    Publisher &publisher() noexcept { return publisher_; }

  private:
    Publisher publisher_;
};

/// One message received on a typed topic, decoded, with its sample's numbers.
template <class M> struct TypedSample {
    uint64_t seq;
    uint64_t missed;
    M message;
};

/// Receives messages of type `M` from a topic; a sample that does not parse throws
/// CELLSHM_INTERNAL for that read alone.
template <class M> class TypedSubscriber {
  public:
    explicit TypedSubscriber(Subscriber subscriber) : subscriber_(std::move(subscriber)) {}

    /// The next message, waiting up to `timeout`; std::nullopt if none came.
    std::optional<TypedSample<M>> next(std::chrono::milliseconds timeout = forever) {
        return decoded(subscriber_.next(timeout));
    }

    /// The newest message queued, without waiting (last-value topics).
    std::optional<TypedSample<M>> latest() { return decoded(subscriber_.latest()); }

    Subscriber &subscriber() noexcept { return subscriber_; }

  private:
    std::optional<TypedSample<M>> decoded(std::optional<Sample> sample) {
        if (!sample) return std::nullopt;
        return TypedSample<M>{sample->seq(), sample->missed(), decode<M>(sample->view(), "a typed topic")};
    }

    Subscriber subscriber_;
};

} // namespace typed
} // namespace cellshm

#endif
