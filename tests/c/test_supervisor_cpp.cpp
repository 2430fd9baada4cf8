// The supervisor through cellshm.hpp: restart, update, stop, start and remove, each event
// once and in order, with a listener that throws on every event beside one that records.
//   test_supervisor_cpp TEST_CELL
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "cellshm.hpp"

#define CHECK(cond)                                                                                                   \
    do {                                                                                                              \
        if (!(cond)) {                                                                                                \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                             \
            std::exit(1);                                                                                             \
        }                                                                                                             \
    } while (0)

using cellshm::CellStatus;
using namespace std::chrono_literals;

int main(int argc, char **argv) {
    CHECK(argc == 2);
    std::mutex lock;
    std::vector<CellStatus> seen;
    int thrown = 0;
    cellshm::Supervisor sup(nullptr, 4);
    cellshm::Subscription recorder = sup.on_event([&](const cellshm::CellEvent &event) {
        std::lock_guard<std::mutex> guard(lock);
        if (event.name == "w") seen.push_back(event.status);
    });
    cellshm::Subscription thrower = sup.on_event([&](const cellshm::CellEvent &) {
        {
            std::lock_guard<std::mutex> guard(lock);
            thrown++;
        }
        throw std::runtime_error("deliberate exception in a supervisor listener");
    });

    cellshm::CellSpec spec{"w", argv[1], {}, {"CELLSHM_QUIET=1", "FLAVOUR=plain"}};
    spec.policy.initial_backoff_ms = 10;
    sup.add(spec);
    try {
        sup.add(spec);
        CHECK(false);
    } catch (const cellshm::Error &e) {
        CHECK(e.status() == CELLSHM_ALREADY_EXISTS);
    }
    sup.wait_for("w", CellStatus::Ready, 10s);
    uint32_t first = sup.pid("w");

    sup.restart("w");
    sup.wait_for("w", CellStatus::Ready, 10s);
    CHECK(sup.pid("w") != first);

    spec.env = {"CELLSHM_QUIET=1", "FLAVOUR=spicy"};
    sup.update(spec);
    sup.wait_for("w", CellStatus::Ready, 10s);
    CHECK(sup.call("w", "Test.env", "FLAVOUR", 5s).view() == "spicy");

    CHECK(sup.stop("w") == 0);
    CHECK(sup.status("w") == CellStatus::Exited);
    sup.start("w");
    sup.wait_for("w", CellStatus::Ready, 10s);

    // A crash is still relaunched after all that, the throwing listener notwithstanding.
    CHECK(kill(static_cast<pid_t>(sup.pid("w")), SIGKILL) == 0);
    sup.wait_for("w", CellStatus::Crashed, 5s);
    sup.wait_for("w", CellStatus::Ready, 10s);

    sup.remove("w");
    try {
        sup.status("w");
        CHECK(false);
    } catch (const cellshm::Error &e) {
        CHECK(e.status() == CELLSHM_NOT_FOUND);
    }
    const std::vector<CellStatus> expected = {
        CellStatus::Starting, CellStatus::Ready,                                              // add
        CellStatus::Stopping, CellStatus::Exited,   CellStatus::Starting, CellStatus::Ready,  // restart
        CellStatus::Stopping, CellStatus::Exited,   CellStatus::Starting, CellStatus::Ready,  // update
        CellStatus::Stopping, CellStatus::Exited,                                             // stop
        CellStatus::Starting, CellStatus::Ready,                                              // start
        CellStatus::Crashed,  CellStatus::Starting, CellStatus::Ready,                        // SIGKILL
        CellStatus::Stopping, CellStatus::Exited,   CellStatus::Removed,                      // remove
    };
    {
        std::lock_guard<std::mutex> guard(lock);
        CHECK(seen == expected);
        CHECK(thrown == static_cast<int>(expected.size()));
    }
    // A hung cell: a call without a time limit of its own ends at the default, and the
    // heartbeat relaunches the cell as unresponsive; cellshm::forever outlives the default.
    sup.set_default_timeout(300ms);
    cellshm::CellSpec stuck{"stuck", argv[1], {}, {"CELLSHM_QUIET=1", "CELLSHM_WORKERS=1"}};
    stuck.policy.heartbeat_interval_ms = 100;
    stuck.policy.heartbeat_allowed_misses = 2;
    sup.add(stuck);
    sup.wait_for("stuck", CellStatus::Ready, 10s);
    const std::string minute("\x60\xea\0\0", 4);
    try {
        sup.call("stuck", "Test.sleep", minute);
        CHECK(false);
    } catch (const cellshm::Error &e) {
        CHECK(e.status() == CELLSHM_DEADLINE_EXCEEDED);
    }
    sup.wait_for("stuck", CellStatus::Crashed, 5s);
    sup.wait_for("stuck", CellStatus::Ready, 10s);
    cellshm::CellSpec patient{"patient", argv[1], {}, {"CELLSHM_QUIET=1"}};
    sup.add(patient);
    sup.wait_for("patient", CellStatus::Ready, 10s);
    const std::string half("\xf4\x01\0\0", 4);
    CHECK(sup.call("patient", "Test.sleep", half, cellshm::forever).view().empty());
    std::printf("test_supervisor_cpp: all checks passed\n");
    return 0;
}
