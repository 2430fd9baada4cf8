/* Tiny assertion helpers for the ctest programs: a failed CHECK prints the location,
 * the expression and the library's last error message, then exits 1. */
#ifndef CELLSHM_TEST_CHECK_H
#define CELLSHM_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cellshm.h"

#define CHECK(cond)                                                                                     \
    do {                                                                                                \
        if (!(cond)) {                                                                                  \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (last error: %s)\n", __FILE__, __LINE__, #cond,    \
                    cellshm_last_error_message());                                                     \
            exit(1);                                                                                    \
        }                                                                                               \
    } while (0)

#define CHECK_STATUS(expr, expected)                                                                    \
    do {                                                                                                \
        cellshm_status got_ = (expr);                                                                   \
        if (got_ != (expected)) {                                                                       \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n", __FILE__, __LINE__,  \
                    #expr, cellshm_status_str(got_), cellshm_status_str(expected),                      \
                    cellshm_last_error_message());                                                     \
            exit(1);                                                                                    \
        }                                                                                               \
    } while (0)

static inline double seconds_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static inline void put_u32(uint8_t *out, uint32_t v) {
    out[0] = (uint8_t)v;
    out[1] = (uint8_t)(v >> 8);
    out[2] = (uint8_t)(v >> 16);
    out[3] = (uint8_t)(v >> 24);
}

#endif
