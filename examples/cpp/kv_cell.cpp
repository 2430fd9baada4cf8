// A cell serving kv.Store (examples/proto/kv.proto) from memory, in C++: protobuf's C++
// messages (kv.pb.h, from protoc --cpp_out) and the header cellshm-codegen --lang cpp
// writes (kv.cellshm.hpp). CMake builds it when protobuf's C++ library and protoc are
// found. Started by a host, never by hand.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "kv.cellshm.hpp"

namespace {

constexpr size_t kHistory = 1024;

class MemoryStore : public kv::StoreServicer {
  public:
    kv::GetReply get(const kv::GetRequest &request) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto found = values_.find(request.key());
        if (found == values_.end()) throw cellshm::Error(CELLSHM_NOT_FOUND, "no key \"" + request.key() + "\"");
        kv::GetReply reply;
        reply.set_found(true);
        reply.set_value(found->second);
        return reply;
    }

    kv::PutReply put(const kv::PutRequest &request) override {
        if (request.key().empty()) throw cellshm::Error(CELLSHM_INVALID_ARGUMENT, "the key is empty");
        kv::PutReply reply;
        auto [previous, sequence] = set(request.key(), request.value());
        if (previous) reply.set_previous(*previous);
        reply.set_sequence(sequence);
        return reply;
    }

    void watch(const kv::WatchRequest &request,
               cellshm::typed::ServerStream<cellshm::typed::Nothing, kv::Event> &stream) override {
        uint64_t next = request.since() + 1;
        uint32_t sent = 0;
        for (;;) {
            std::deque<kv::Event> due;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                while (sequence_ < next) {
                    if (stream.cancelled()) throw cellshm::Error(CELLSHM_CANCELLED, "the watcher went away");
                    // Woken by every change; the timeout only rechecks cancellation.
                    changed_.wait_for(lock, std::chrono::milliseconds(20));
                }
                for (const auto &event : history_)
                    if (event.sequence() >= next) due.push_back(event);
                next = sequence_ + 1;
            }
            for (const auto &event : due) {
                if (event.key().rfind(request.prefix(), 0) != 0) continue;
                stream.send(event);
                if (request.max_events() != 0 && ++sent == request.max_events()) return;
            }
        }
    }

    kv::UploadReply upload(cellshm::typed::ServerStream<kv::Chunk, cellshm::typed::Nothing> &stream) override {
        kv::UploadReply reply;
        while (auto chunk = stream.next()) {
            std::string value;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                value = values_[chunk->key()];
            }
            reply.set_chunks(reply.chunks() + 1);
            reply.set_bytes(reply.bytes() + chunk->data().size());
            set(chunk->key(), value + chunk->data());
        }
        return reply;
    }

    void chat(cellshm::typed::ServerStream<kv::ChatMessage, kv::ChatMessage> &stream) override {
        while (auto message = stream.next()) {
            kv::ChatMessage answer;
            answer.set_text("you said: " + message->text());
            stream.send(answer);
        }
    }

  private:
    std::pair<std::optional<std::string>, uint64_t> set(const std::string &key, const std::string &value) {
        std::lock_guard<std::mutex> lock(mutex_);
        kv::Event event;
        event.set_key(key);
        event.set_value(value);
        event.set_sequence(++sequence_);
        if (history_.size() == kHistory) history_.pop_front();
        history_.push_back(event);
        std::optional<std::string> previous;
        auto found = values_.find(key);
        if (found != values_.end()) previous = found->second;
        values_[key] = value;
        changed_.notify_all();
        return {previous, sequence_};
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    std::map<std::string, std::string> values_;
    std::deque<kv::Event> history_;
    uint64_t sequence_ = 0;
};

} // namespace

int main(int argc, char **argv) {
    try {
        static MemoryStore store; // outlives the cell's handlers
        cellshm::Cell cell(argc, argv);
        kv::serve_store(cell, store);
        cell.run();
        google::protobuf::ShutdownProtobufLibrary();
        return 0;
    } catch (const cellshm::Error &e) {
        std::cerr << "kv_cell: " << e.what() << "\n";
        return 1;
    }
}
