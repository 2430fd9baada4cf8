// Typed topics in C++ (cellshm_typed.hpp over protobuf's C++ messages), across two
// processes: the host publishes kv.Event messages with history; a C++ cell (this program,
// spawned with "cell") joins late, reads the history and what follows, and answers with
// a kv.Event summing what it read, also published on its own last-value topic, which the
// host reads with latest(). A sample that is not a kv.Event throws CELLSHM_INTERNAL for
// that read alone.
//   test_typed_topics_cpp
#include <cstdio>
#include <string>
#include <thread>

#include "cellshm_typed.hpp"
#include "check.h"
#include "kv.pb.h"


using namespace std::chrono_literals;

namespace {
constexpr uint64_t kBefore = 10;  // published before the cell subscribes
constexpr uint64_t kHistory = 4;  // of which it reads the last four
constexpr uint64_t kAfter = 1000; // published once it has

kv::Event event(uint64_t n) {
    kv::Event e;
    e.set_key("key-" + std::to_string(n));
    e.set_value(std::string(static_cast<size_t>(n % 50), 'v'));
    e.set_sequence(n);
    return e;
}

// Relay.read {count as text}: reads `count` events from the host's topic, checks each,
// and answers (and publishes on "kv.read") an Event whose sequence is the sum of theirs
// and whose key names the first.
int cell_main(int argc, char **argv) {
    cellshm::Cell cell(argc, argv);
    cellshm::typed::TypedPublisher<kv::Event> read_so_far(
        cell.publish("kv.read", cellshm_topic_options_last_value(256)));
    cell.method("Relay.read", [&](std::string_view request) {
        uint64_t count = std::stoull(std::string(request));
        cellshm::SubscribeOptions block;
        block.policy = cellshm::TopicPolicy::Block;
        cellshm::typed::TypedSubscriber<kv::Event> events(cell.subscribe("kv.events", block));
        kv::Event summary;
        uint64_t sum = 0;
        for (uint64_t i = 0; i < count; i++) {
            std::optional<cellshm::typed::TypedSample<kv::Event>> got = events.next(30000ms);
            if (!got) throw cellshm::Error(CELLSHM_DEADLINE_EXCEEDED, "no event within 30 s");
            const kv::Event &e = got->message;
            if (e.sequence() != got->seq || e.key() != "key-" + std::to_string(e.sequence()) ||
                e.value().size() != e.sequence() % 50 || got->missed != 0)
                throw cellshm::Error(CELLSHM_DATA_LOSS, "event " + std::to_string(got->seq) + " is not what was sent");
            if (i == 0) summary.set_key(e.key());
            sum += e.sequence();
        }
        summary.set_sequence(sum);
        read_so_far.publish(summary);
        return summary.SerializeAsString();
    });
    cell.run();
    return 0;
}

int host_main(const char *self) {
    cellshm::Hub hub;
    cellshm_topic_options options = cellshm_topic_options_default();
    options.sample_size = 128;
    options.depth = 64;
    options.history = static_cast<uint32_t>(kHistory);
    cellshm::typed::TypedPublisher<kv::Event> events(hub.publish("kv.events", options));
    for (uint64_t n = 1; n <= kBefore; n++) CHECK(events.publish(event(n)) == n);

    cellshm::Peer cell = hub.spawn("cpp-cell", self, {"cell"});
    cell.wait_ready(10000ms);
    std::string reply;
    std::thread reader([&] {
        reply = cell.call("Relay.read", std::to_string(kHistory + kAfter), 120000ms).str();
    });
    events.publisher().wait_for_subscribers(1, 30000ms);
    for (uint64_t n = kBefore + 1; n <= kBefore + kAfter; n++) CHECK(events.publish(event(n), 30000ms) == n);
    reader.join();

    kv::Event summary;
    CHECK(summary.ParseFromString(reply));
    uint64_t first = kBefore - kHistory + 1, last = kBefore + kAfter;
    CHECK(summary.key() == "key-" + std::to_string(first));
    CHECK(summary.sequence() == (first + last) * (last - first + 1) / 2);

    // The cell's last-value topic holds the same summary.
    cellshm::typed::TypedSubscriber<kv::Event> read(hub.subscribe("kv.read"));
    std::optional<cellshm::typed::TypedSample<kv::Event>> latest = read.next(10000ms);
    CHECK(latest && latest->message.sequence() == summary.sequence() && latest->message.key() == summary.key());

    // Bytes that are not a kv.Event fail that read alone.
    cellshm::typed::TypedSubscriber<kv::Event> own(hub.subscribe("kv.events"));
    while (own.latest()) {
    }
    events.publisher().publish(std::string("\xff\xff\xff", 3));
    events.publish(event(7));
    try {
        own.next(10000ms);
        CHECK(!"a sample that is not a kv.Event was decoded");
    } catch (const cellshm::Error &e) {
        CHECK(e.status() == CELLSHM_INTERNAL && e.message().find("kv.Event") != std::string::npos);
    }
    std::optional<cellshm::typed::TypedSample<kv::Event>> after = own.next(10000ms);
    CHECK(after && after->message.key() == "key-7" && after->seq == kBefore + kAfter + 2);

    CHECK(cell.shutdown(5000ms) == 0);
    std::printf("typed topics: the cell read %llu events (history %llu), summary %llu\n",
                static_cast<unsigned long long>(kHistory + kAfter), static_cast<unsigned long long>(kHistory),
                static_cast<unsigned long long>(summary.sequence()));
    return 0;
}
} // namespace

int main(int argc, char **argv) {
    if (argc >= 2 && std::string(argv[1]) == "cell") return cell_main(argc, argv);
    CHECK(argc == 1);
    return host_main(argv[0]);
}
