/* 4 C threads calling concurrently through one peer handle; every answer checked.
 *   test_threads TEST_CELL */
#include <pthread.h>

#include "check.h"

#define THREADS 4
#define CALLS 2000

struct worker {
    cellshm_peer *peer;
    int id;
    int errors;
};

static void *work(void *arg) {
    struct worker *w = (struct worker *)arg;
    uint8_t request[200];
    int i;
    for (i = 0; i < CALLS; i++) {
        cellshm_response *response = NULL;
        size_t len = (i % 2 == 0) ? 12 : 40 + (size_t)(i % 150);
        cellshm_call_options options = cellshm_call_options_default();
        options.timeout_ms = 5000;
        memset(request, w->id, len);
        put_u32(request, (uint32_t)i);
        if (cellshm_peer_call(w->peer, "Echo.echo", request, len, &options, &response) != CELLSHM_OK ||
            cellshm_response_len(response) != len || memcmp(cellshm_response_data(response), request, len) != 0) {
            fprintf(stderr, "thread %d call %d: wrong answer (%s)\n", w->id, i, cellshm_last_error_message());
            w->errors++;
        }
        cellshm_response_free(response);
    }
    return NULL;
}

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peer = NULL;
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    int i;
    int errors = 0;
    int exit_code = -1;

    CHECK(argc == 2);
    CHECK_STATUS(cellshm_hub_new(NULL, 0, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_spawn(hub, "threads", argv[1], NULL, NULL, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);
    for (i = 0; i < THREADS; i++) {
        workers[i].peer = peer;
        workers[i].id = i + 1;
        workers[i].errors = 0;
        CHECK(pthread_create(&threads[i], NULL, work, &workers[i]) == 0);
    }
    for (i = 0; i < THREADS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        errors += workers[i].errors;
    }
    CHECK(errors == 0);
    CHECK_STATUS(cellshm_peer_shutdown(peer, 3000), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_exit(peer, 0, &exit_code), CELLSHM_OK);
    CHECK(exit_code == 0); /* the cell verified its userdata frees before exiting */
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
    printf("test_threads: %d threads x %d calls, all correct\n", THREADS, CALLS);
    return 0;
}
