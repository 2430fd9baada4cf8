// A C++ program that is both a host and a cell: run without arguments it creates a hub,
// spawns itself as a cell serving Text.upper and the stream Text.words, calls them, shows how errors surface as
// exceptions, and shuts the cell down. The hub starts it again as a cell (CELLSHM_DOORBELL_FD set).
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>

#include "cellshm.hpp"

using namespace std::chrono_literals;

static int run_cell(int argc, char **argv) {
    cellshm::Cell cell(argc, argv);
    cell.method("Text.upper", [](std::string_view request) {
        std::string out(request);
        for (auto &c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return out;
    });
    cell.method("Text.strict", [](std::string_view request) -> std::string {
        if (request.empty()) throw cellshm::Error(CELLSHM_INVALID_ARGUMENT, "Text.strict wants some text");
        return std::string(request);
    });
    // A stream: one item per word of the request.
    cell.stream_method("Text.words", [](std::string_view request, cellshm::StreamCall &call) {
        size_t start = 0;
        while (start < request.size()) {
            size_t end = request.find(' ', start);
            if (end == std::string_view::npos) end = request.size();
            if (end > start) call.send(request.substr(start, end - start));
            start = end + 1;
        }
        return std::string();
    });
    cell.run();
    return 0;
}

static int run_host(const char *self) {
    cellshm::Hub hub;
    cellshm::Peer peer = hub.spawn("text", self);  // this very binary, as a cell
    peer.wait_ready(10s);
    std::cout << "Text.upper -> " << peer.call("Text.upper", "hello from c++", 2s).str() << "\n";
    try {
        peer.call("Text.strict", "", 2s);
        std::cout << "Text.strict accepted empty text\n";
        return 1;
    } catch (const cellshm::Error &e) {
        std::cout << "Text.strict -> " << cellshm_status_str(e.status()) << ": " << e.message() << "\n";
    }
    try {
        peer.call("Text.nope", "x", 2s);
        return 1;
    } catch (const cellshm::Error &e) {
        std::cout << "Text.nope -> " << cellshm_status_str(e.status()) << "\n";
    }
    std::cout << "Text.words ->";
    cellshm::Stream words = peer.open_stream("Text.words", "streams  of words", 2s);
    while (auto word = words.next()) std::cout << " [" << word->view() << "]";
    std::cout << "\n";
    std::cout << "cell exited with code " << peer.shutdown(2s) << "\n";
    return 0;
}

int main(int argc, char **argv) {
    try {
        bool is_cell = std::getenv("CELLSHM_DOORBELL_FD") != nullptr;
        return is_cell ? run_cell(argc, argv) : run_host("/proc/self/exe");
    } catch (const cellshm::Error &e) {
        std::cerr << "text_service: " << e.what() << "\n";
        return 1;
    }
}
