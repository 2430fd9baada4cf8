// Publish/subscribe through cellshm.hpp: a C++ host publishes (copies and loans) to
// itself and a C cell, reads a C cell's topic with range-for until it closes, and a
// supervisor's host publishes and subscribes; errors are cellshm::Error with the status.
//   test_topics_cpp TEST_CELL
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "cellshm.hpp"

#define CHECK(cond)                                                                                                   \
    do {                                                                                                              \
        if (!(cond)) {                                                                                                \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                             \
            std::exit(1);                                                                                             \
        }                                                                                                             \
    } while (0)

using namespace std::chrono_literals;

namespace {
constexpr uint64_t kSamples = 20000;

// A Topic.* body of the test cells: a u32-length-prefixed name, then u32s.
std::string body(const std::string &name, std::initializer_list<uint32_t> values) {
    std::string out;
    auto put = [&out](uint32_t v) {
        for (int i = 0; i < 4; i++) out.push_back(static_cast<char>(v >> (8 * i)));
    };
    put(static_cast<uint32_t>(name.size()));
    out += name;
    for (uint32_t v : values) put(v);
    return out;
}

uint64_t u64_at(const uint8_t *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

void put_u64(uint8_t *out, uint64_t v) {
    for (int i = 0; i < 8; i++) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

template <typename F> cellshm_status status_of(F f) {
    try {
        f();
    } catch (const cellshm::Error &e) {
        return e.status();
    }
    return CELLSHM_OK;
}
} // namespace

int main(int argc, char **argv) {
    CHECK(argc == 2);
    cellshm::Hub hub;
    cellshm::Peer cell = hub.spawn("c-cell", argv[1]);
    cell.wait_ready(10000ms);

    // The host and a C cell read every sample, in order, under Block.
    cellshm_topic_options options = cellshm_topic_options_default();
    options.sample_size = 128;
    options.depth = 64;
    cellshm::Publisher publisher = hub.publish("cpp-numbers", options);
    CHECK(status_of([&] { hub.publish("cpp-numbers"); }) == CELLSHM_ALREADY_EXISTS);
    CHECK(status_of([&] { hub.subscribe("nothing"); }) == CELLSHM_NOT_FOUND);
    cellshm::SubscribeOptions block;
    block.policy = cellshm::TopicPolicy::Block;
    std::string reply;
    std::thread reader([&] {
        reply = cell.call("Topic.read", body("cpp-numbers", {CELLSHM_TOPIC_BLOCK, 0, kSamples}), 120000ms).str();
    });
    cellshm::Subscriber own = hub.subscribe("cpp-numbers", block);
    uint64_t own_seen = 0;
    std::thread own_reader([&] {
        for (uint64_t i = 1; i <= kSamples; i++) {
            std::optional<cellshm::Sample> sample = own.next(30000ms);
            CHECK(sample && sample->seq() == i && sample->missed() == 0 && u64_at(sample->data()) == i);
            own_seen++;
        }
    });
    publisher.wait_for_subscribers(2, 30000ms);
    for (uint64_t i = 1; i <= kSamples; i++) {
        if (i % 2 == 0) {
            cellshm::Loan loan = publisher.loan(30000ms);
            CHECK(loan.seq() == i && loan.capacity() == 128);
            put_u64(loan.data(), i);
            CHECK(loan.publish(100) == i);
        } else {
            uint8_t small[16] = {0};
            put_u64(small, i);
            CHECK(publisher.publish(std::string_view(reinterpret_cast<const char *>(small), sizeof small), 30000ms) ==
                  i);
        }
    }
    reader.join();
    own_reader.join();
    CHECK(own_seen == kSamples && reply.size() == 28);
    CHECK(u64_at(reinterpret_cast<const uint8_t *>(reply.data())) == kSamples);
    CHECK(u64_at(reinterpret_cast<const uint8_t *>(reply.data()) + 8) == 0);
    CHECK(status_of([&] { publisher.publish(std::string(129, 'x')); }) == CELLSHM_INVALID_ARGUMENT);
    {
        cellshm::Loan spent = publisher.loan();
        CHECK(status_of([&] { spent.publish(129); }) == CELLSHM_INVALID_ARGUMENT);
    }

    // A C cell publishes; range-for reads until the topic is closed.
    cell.call("Topic.open", body("from-c", {256, 16}), 10000ms);
    cellshm::Subscriber from_c = hub.subscribe("from-c", block);
    std::thread sender([&] {
        cell.call("Topic.send", body("from-c", {500, 200}), 60000ms);
        cell.call("Topic.close", body("from-c", {}), 10000ms);
    });
    uint64_t count = 0;
    for (cellshm::Sample &sample : from_c) {
        CHECK(sample.seq() == count + 1 && sample.size() == 200 && u64_at(sample.data()) == sample.seq());
        count++;
    }
    sender.join();
    CHECK(count == 500);

    // A supervisor's host publishes and subscribes alike.
    cellshm::Supervisor sup(nullptr, 2);
    cellshm::Publisher events = sup.publish("events");
    cellshm::Subscriber listener = sup.subscribe("events");
    events.publish("hello");
    std::optional<cellshm::Sample> hello = listener.next(1000ms);
    CHECK(hello && hello->str() == "hello" && !listener.next(0ms));
    // A last-value topic: the newest only.
    cellshm::Publisher board = sup.publish("board", cellshm_topic_options_last_value(32));
    board.publish("one");
    board.publish("two");
    cellshm::Subscriber board_reader = sup.subscribe("board");
    std::optional<cellshm::Sample> current = board_reader.latest();
    CHECK(current && current->str() == "two" && current->seq() == 2 && !board_reader.latest());
    std::printf("c++ topics ok\n");
    return 0;
}
