/* The C-API half of `cellshm-bench`: 64-byte Echo.echo round trips through the C API,
 * Spin mode on both sides, timed one by one.
 *   bench_c_caller ITERATIONS CELL_PROGRAM [CELL_ARG...]
 * Prints: cellshm_64B_spin_c_api p50_ns=N p99_ns=N */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cellshm.h"

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peer = NULL;
    cellshm_peer_options options = cellshm_peer_options_default();
    const char *env[] = {"CELLSHM_WAIT=spin", "CELLSHM_WORKERS=2", "CELLSHM_QUIET=1", NULL};
    uint8_t payload[64];
    uint64_t *samples;
    long n, warmup, i;

    if (argc < 3 || (n = strtol(argv[1], NULL, 10)) <= 0) {
        fprintf(stderr, "usage: bench_c_caller ITERATIONS CELL_PROGRAM [CELL_ARG...]\n");
        return 2;
    }
    warmup = n / 10;
    samples = (uint64_t *)malloc((size_t)n * sizeof *samples);
    memset(payload, 7, sizeof payload);
    options.wait = CELLSHM_WAIT_SPIN;
    if (samples == NULL || cellshm_hub_new(NULL, 0, &hub) != CELLSHM_OK ||
        cellshm_hub_spawn(hub, "bench", argv[2], (const char *const *)&argv[3], env, &options, &peer) != CELLSHM_OK ||
        cellshm_peer_wait_ready(peer, 10000) != CELLSHM_OK) {
        fprintf(stderr, "bench_c_caller: %s\n", cellshm_last_error_message());
        return 1;
    }
    for (i = -warmup; i < n; i++) {
        cellshm_response *response = NULL;
        uint64_t start = now_ns();
        if (cellshm_peer_call(peer, "Echo.echo", payload, sizeof payload, NULL, &response) != CELLSHM_OK ||
            cellshm_response_len(response) != sizeof payload) {
            fprintf(stderr, "bench_c_caller: %s\n", cellshm_last_error_message());
            return 1;
        }
        cellshm_response_free(response);
        if (i >= 0) {
            samples[i] = now_ns() - start;
        }
    }
    qsort(samples, (size_t)n, sizeof *samples, compare);
    printf("cellshm_64B_spin_c_api p50_ns=%llu p99_ns=%llu\n", (unsigned long long)samples[(n - 1) / 2],
           (unsigned long long)samples[(long)((double)(n - 1) * 0.99 + 0.5)]);
    cellshm_peer_shutdown(peer, 2000);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
    free(samples);
    return 0;
}
