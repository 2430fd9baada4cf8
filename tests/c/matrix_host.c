/* The C host of the cross-language matrix (tests/matrix): runs the four checks against
 * the cell started by argv and prints "matrix host=c: ok".   matrix_host CELL [ARG...] */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "check.h"

struct killer {
    cellshm_peer *peer;
    struct timespec killed;
};

static void *kill_later(void *arg) {
    struct killer *k = (struct killer *)arg;
    usleep(200 * 1000);
    clock_gettime(CLOCK_MONOTONIC, &k->killed);
    cellshm_peer_kill(k->peer);
    return NULL;
}

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peer = NULL;
    cellshm_response *response = NULL;
    cellshm_call_options opts = cellshm_call_options_default();
    cellshm_call_options short_opts = cellshm_call_options_default();
    cellshm_call_options long_opts = cellshm_call_options_default();
    const char *env[] = {"CELLSHM_QUIET=1", NULL};
    uint8_t data[1000];
    uint8_t request[64];
    struct killer k;
    pthread_t thread;
    size_t i;
    opts.timeout_ms = 5000;
    short_opts.timeout_ms = 50;
    long_opts.timeout_ms = 30000;

    CHECK(argc >= 2);
    CHECK_STATUS(cellshm_hub_new(NULL, 0, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_spawn(hub, "matrix", argv[1], (const char *const *)&argv[2], env, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 15000), CELLSHM_OK);
    /* 1. echo */
    for (i = 0; i < sizeof data; i++) {
        data[i] = (uint8_t)(i % 251);
    }
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", data, sizeof data, &opts, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == sizeof data && memcmp(cellshm_response_data(response), data, sizeof data) == 0);
    cellshm_response_free(response);
    /* 2. error propagation */
    put_u32(request, CELLSHM_NOT_FOUND);
    memcpy(request + 4, "no widget 7", 11);
    CHECK_STATUS(cellshm_peer_call(peer, "Test.fail", request, 15, &opts, &response), CELLSHM_NOT_FOUND);
    CHECK(strstr(cellshm_last_error_message(), "no widget 7") != NULL);
    /* 2b. a status number this library does not know arrives as it was sent */
    put_u32(request, 142);
    memcpy(request + 4, "from the future", 15);
    CHECK_STATUS(cellshm_peer_call(peer, "Test.fail", request, 19, &opts, &response), CELLSHM_UNKNOWN);
    CHECK(cellshm_last_error_code() == 142);
    CHECK(strstr(cellshm_last_error_message(), "from the future") != NULL);
    /* 3. deadline */
    put_u32(request, 500);
    CHECK_STATUS(cellshm_peer_call(peer, "Test.sleep", request, 4, &short_opts, &response), CELLSHM_DEADLINE_EXCEEDED);
    /* 4. death detection */
    k.peer = peer;
    CHECK(pthread_create(&thread, NULL, kill_later, &k) == 0);
    put_u32(request, 10000);
    CHECK_STATUS(cellshm_peer_call(peer, "Test.sleep", request, 4, &long_opts, &response), CELLSHM_PEER_DEAD);
    CHECK(seconds_since(&k.killed) < 1.0);
    CHECK(pthread_join(thread, NULL) == 0);
    cellshm_peer_wait_exit(peer, 5000, NULL);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
    printf("matrix host=c: ok\n");
    return 0;
}
