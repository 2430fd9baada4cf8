/* The C cell used by the ctest suite. Every reply path of the C API is exercised:
 *   Echo.echo       in place (cellshm_reply_buffer)
 *   Test.write      copied (cellshm_reply_write), shortened with cellshm_reply_set_len
 *   Test.sleep      u32 milliseconds, empty reply
 *   Test.fail       u32 status + message: an error with a message
 *   Test.call_host  calls the host's Host.echo and replies with its answer
 *   Test.log        sends the request as a log line to the host
 *   Test.env        the value of the environment variable the request names ("" if unset)
 *   Test.log_fields sends the request as a WARN record with two fields and its location
 *   Topic.read, Topic.open, Topic.send, Topic.close: publish/subscribe, with the bodies
 *                   of the Rust test cell's methods of the same names (see
 *                   tools/testkit/src/lib.rs: u32 little-endian, strings u32-length-prefixed)
 * On exit it checks that every registration's userdata was freed exactly once. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cellshm.h"

static cellshm_cell *the_cell = NULL;
static int registrations = 0;
static int frees = 0;

static void count_free(void *userdata) {
    int *counter = (int *)userdata;
    (*counter)++;
}

static uint32_t u32_at(const uint8_t *bytes) {
    return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
}

static uint32_t echo(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    uint8_t *buffer = NULL;
    cellshm_status status = cellshm_reply_buffer(reply, len, &buffer);
    (void)userdata;
    if (status == CELLSHM_OK && len > 0) {
        memcpy(buffer, request, len);
    }
    return status;
}

static uint32_t write_copy(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    uint8_t *buffer = NULL;
    cellshm_status status;
    (void)userdata;
    /* Ask for more than needed, then shorten: exercises cellshm_reply_set_len. */
    status = cellshm_reply_buffer(reply, len + 100, &buffer);
    if (status != CELLSHM_OK) {
        return status;
    }
    status = cellshm_reply_set_len(reply, len + 101);
    if (status != CELLSHM_INVALID_ARGUMENT) {
        return CELLSHM_INTERNAL; /* growing past the buffer must be refused */
    }
    return cellshm_reply_write(reply, request, len);
}

static uint32_t sleep_ms(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    struct timespec ts;
    uint32_t ms;
    (void)userdata;
    (void)reply;
    if (len < 4) {
        cellshm_reply_error_message(reply, "Test.sleep wants a u32 of milliseconds");
        return CELLSHM_INVALID_ARGUMENT;
    }
    ms = u32_at(request);
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
    return CELLSHM_OK;
}

static uint32_t fail(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    char message[256];
    size_t n;
    (void)userdata;
    if (len < 4) {
        return CELLSHM_INVALID_ARGUMENT; /* no message: the status name is sent */
    }
    n = len - 4 < sizeof message - 1 ? len - 4 : sizeof message - 1;
    memcpy(message, request + 4, n);
    message[n] = '\0';
    cellshm_reply_error_message(reply, message);
    return u32_at(request);
}

static uint32_t call_host(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    cellshm_response *response = NULL;
    cellshm_call_options options = cellshm_call_options_default();
    cellshm_status status;
    (void)userdata;
    options.timeout_ms = 5000;
    options.deadline_ns = cellshm_reply_deadline_ns(reply);
    status = cellshm_cell_call(the_cell, "Host.echo", request, len, &options, &response);
    if (status != CELLSHM_OK) {
        cellshm_reply_error_message(reply, cellshm_last_error_message());
        return status;
    }
    status = cellshm_reply_write(reply, cellshm_response_data(response), cellshm_response_len(response));
    cellshm_response_free(response);
    return status;
}

static uint32_t log_line(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    char line[512];
    size_t n = len < sizeof line - 1 ? len : sizeof line - 1;
    (void)userdata;
    (void)reply;
    memcpy(line, request, n);
    line[n] = '\0';
    return cellshm_cell_log(the_cell, line);
}

/* Test.wait_cancel: waits (up to 5 s) until the caller cancels or its deadline passes;
 * Test.cancels_seen answers how many times that happened (u32). */
static volatile int cancels_seen = 0;

static uint32_t wait_cancel(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    struct timespec ts = {0, 1000000L};
    int i;
    (void)userdata;
    (void)request;
    (void)len;
    for (i = 0; i < 5000; i++) {
        if (cellshm_reply_cancelled(reply)) {
            uint64_t deadline = cellshm_reply_deadline_ns(reply);
            __atomic_add_fetch(&cancels_seen, 1, __ATOMIC_SEQ_CST);
            /* Say why: our answer can reach the caller before its own deadline check. */
            return deadline != 0 && cellshm_monotonic_now_ns() >= deadline ? CELLSHM_DEADLINE_EXCEEDED
                                                                            : CELLSHM_CANCELLED;
        }
        nanosleep(&ts, NULL);
    }
    return CELLSHM_OK;
}

static uint32_t get_cancels_seen(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    uint8_t answer[4];
    uint32_t n = (uint32_t)__atomic_load_n(&cancels_seen, __ATOMIC_SEQ_CST);
    (void)userdata;
    (void)request;
    (void)len;
    answer[0] = (uint8_t)n;
    answer[1] = (uint8_t)(n >> 8);
    answer[2] = (uint8_t)(n >> 16);
    answer[3] = (uint8_t)(n >> 24);
    return cellshm_reply_write(reply, answer, sizeof answer);
}

/* Stream.count {n, size}: n items of `size` bytes, each starting with its index. */
static uint32_t stream_count(void *userdata, const uint8_t *request, size_t len, cellshm_stream_call *call) {
    uint8_t item[4096];
    uint32_t n, size, i;
    cellshm_status status;
    (void)userdata;
    if (len < 8 || (size = u32_at(request + 4)) < 4 || size > sizeof item) {
        cellshm_stream_call_error_message(call, "Stream.count wants {n, size}, 4 <= size <= 4096");
        return CELLSHM_INVALID_ARGUMENT;
    }
    n = u32_at(request);
    memset(item, '.', size);
    for (i = 0; i < n; i++) {
        item[0] = (uint8_t)i;
        item[1] = (uint8_t)(i >> 8);
        item[2] = (uint8_t)(i >> 16);
        item[3] = (uint8_t)(i >> 24);
        if ((status = cellshm_stream_call_send(call, item, size)) != CELLSHM_OK) {
            return status;
        }
    }
    return CELLSHM_OK;
}

/* Stream.sum: reads every item; the response is {bytes: u64, fnv1a: u64}. */
static uint32_t stream_sum(void *userdata, const uint8_t *request, size_t len, cellshm_stream_call *call) {
    uint64_t total = 0, hash = 0xcbf29ce484222325ull;
    uint8_t answer[16];
    int k;
    (void)userdata;
    (void)request;
    (void)len;
    for (;;) {
        cellshm_stream_item *item = NULL;
        const uint8_t *data;
        size_t n, j;
        cellshm_status status = cellshm_stream_call_next(call, &item);
        if (status != CELLSHM_OK) {
            return status;
        }
        if (item == NULL) {
            break;
        }
        data = cellshm_stream_item_data(item);
        n = cellshm_stream_item_len(item);
        for (j = 0; j < n; j++) {
            hash = (hash ^ data[j]) * 0x100000001b3ull;
        }
        total += n;
        cellshm_stream_item_free(item);
    }
    for (k = 0; k < 8; k++) {
        answer[k] = (uint8_t)(total >> (8 * k));
        answer[8 + k] = (uint8_t)(hash >> (8 * k));
    }
    return cellshm_stream_call_set_response(call, answer, sizeof answer);
}

/* Stream.forever: items until the caller cancels; then the send fails and we return. */
static uint32_t stream_forever(void *userdata, const uint8_t *request, size_t len, cellshm_stream_call *call) {
    static const uint8_t item[64] = {0};
    (void)userdata;
    (void)request;
    (void)len;
    while (cellshm_stream_call_send(call, item, sizeof item) == CELLSHM_OK) {
    }
    return cellshm_stream_call_cancelled(call) ? CELLSHM_CANCELLED : CELLSHM_INTERNAL;
}

static uint32_t env_value(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    char name[128];
    const char *value;
    (void)userdata;
    if (len >= sizeof name) {
        return CELLSHM_INVALID_ARGUMENT;
    }
    memcpy(name, request, len);
    name[len] = '\0';
    value = getenv(name);
    if (value == NULL) {
        value = "";
    }
    return cellshm_reply_write(reply, (const uint8_t *)value, strlen(value));
}

static uint32_t log_fields(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    char message[256];
    cellshm_log_field fields[2];
    (void)userdata;
    (void)reply;
    if (len >= sizeof message) {
        return CELLSHM_INVALID_ARGUMENT;
    }
    memcpy(message, request, len);
    message[len] = '\0';
    fields[0].key = "answer";
    fields[0].value = "42";
    fields[1].key = "unit";
    fields[1].value = "ms";
    return cellshm_cell_log_fields(the_cell, 2, "c.cell", message, __FILE__, __LINE__, fields, 2);
}

/* Reads the body's next u32 (0 past the end). */
static uint32_t take_u32(const uint8_t **at, const uint8_t *end) {
    uint32_t v;
    if (end - *at < 4) {
        *at = end;
        return 0;
    }
    v = u32_at(*at);
    *at += 4;
    return v;
}

/* Copies the body's next string into `out` (of `cap` bytes, NUL-terminated); 0 if it
 * does not fit or runs past the end. */
static int take_str(const uint8_t **at, const uint8_t *end, char *out, size_t cap) {
    uint32_t len = take_u32(at, end);
    if ((size_t)(end - *at) < len || len >= cap) {
        return 0;
    }
    memcpy(out, *at, len);
    out[len] = '\0';
    *at += len;
    return 1;
}

static void put_u64(uint8_t *out, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) {
        out[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t u64_at(const uint8_t *b) {
    return (uint64_t)u32_at(b) | (uint64_t)u32_at(b + 4) << 32;
}

/* Topic.read {name} {policy} {n} {count}: reads `count` samples (each starts with its
 * own sequence number), answers u64 received, u64 missed, u64 last seq, u32 the status
 * that ended it early (0: none). */
static uint32_t topic_read(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    const uint8_t *at = request, *end = request + len;
    char name[64];
    cellshm_subscriber_options options = cellshm_subscriber_options_default();
    cellshm_subscriber *subscriber = NULL;
    cellshm_sample *sample = NULL;
    uint64_t received = 0, missed = 0, last = 0;
    uint32_t count, ended = 0;
    uint8_t *out = NULL;
    cellshm_status status;
    (void)userdata;
    if (!take_str(&at, end, name, sizeof name)) {
        return CELLSHM_INVALID_ARGUMENT;
    }
    options.policy = take_u32(&at, end);
    options.disconnect_after = take_u32(&at, end);
    count = take_u32(&at, end);
    status = cellshm_cell_subscribe(the_cell, name, &options, &subscriber);
    if (status != CELLSHM_OK) {
        return status;
    }
    while (received < count) {
        status = cellshm_subscriber_next(subscriber, 30000, &sample);
        if (status != CELLSHM_OK) {
            ended = status;
            break;
        }
        if (sample == NULL) {
            cellshm_subscriber_free(subscriber);
            return CELLSHM_DEADLINE_EXCEEDED;
        }
        if (cellshm_sample_len(sample) < 8 || u64_at(cellshm_sample_data(sample)) != cellshm_sample_seq(sample)) {
            cellshm_sample_free(sample);
            cellshm_subscriber_free(subscriber);
            return CELLSHM_DATA_LOSS;
        }
        received++;
        missed += cellshm_sample_missed(sample);
        last = cellshm_sample_seq(sample);
        cellshm_sample_free(sample);
    }
    cellshm_subscriber_free(subscriber);
    status = cellshm_reply_buffer(reply, 28, &out);
    if (status != CELLSHM_OK) {
        return status;
    }
    put_u64(out, received);
    put_u64(out + 8, missed);
    put_u64(out + 16, last);
    out[24] = (uint8_t)ended;
    out[25] = (uint8_t)(ended >> 8);
    out[26] = (uint8_t)(ended >> 16);
    out[27] = (uint8_t)(ended >> 24);
    return CELLSHM_OK;
}

/* The topic this cell publishes (one at a time), shared by the handler threads. */
static pthread_mutex_t publishing = PTHREAD_MUTEX_INITIALIZER;
static cellshm_publisher *publisher = NULL;
static char published[64];

/* Topic.open {name} {sample size} {depth} */
static uint32_t topic_open(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    const uint8_t *at = request, *end = request + len;
    cellshm_topic_options options = cellshm_topic_options_default();
    cellshm_status status;
    char name[64];
    (void)userdata;
    (void)reply;
    if (!take_str(&at, end, name, sizeof name)) {
        return CELLSHM_INVALID_ARGUMENT;
    }
    options.sample_size = take_u32(&at, end);
    options.depth = take_u32(&at, end);
    pthread_mutex_lock(&publishing);
    if (publisher != NULL) {
        status = CELLSHM_ALREADY_EXISTS;
    } else {
        status = cellshm_cell_publish(the_cell, name, &options, &publisher);
        strcpy(published, name);
    }
    pthread_mutex_unlock(&publishing);
    return status;
}

/* Topic.send {name} {count} {size}: `count` samples of `size` bytes (at least 8), each
 * written in place in a loaned slot and starting with its sequence number. */
static uint32_t topic_send(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    const uint8_t *at = request, *end = request + len;
    cellshm_loan *loan = NULL;
    cellshm_status status = CELLSHM_OK;
    uint32_t count, size, i;
    char name[64];
    (void)userdata;
    (void)reply;
    if (!take_str(&at, end, name, sizeof name)) {
        return CELLSHM_INVALID_ARGUMENT;
    }
    count = take_u32(&at, end);
    size = take_u32(&at, end);
    size = size < 8 ? 8 : size;
    pthread_mutex_lock(&publishing);
    if (publisher == NULL || strcmp(name, published) != 0) {
        status = CELLSHM_NOT_FOUND;
    }
    for (i = 0; i < count && status == CELLSHM_OK; i++) {
        status = cellshm_publisher_loan(publisher, 30000, &loan);
        if (status != CELLSHM_OK) {
            break;
        }
        if (cellshm_loan_capacity(loan) < size) {
            cellshm_loan_free(loan);
            status = CELLSHM_INVALID_ARGUMENT;
            break;
        }
        put_u64(cellshm_loan_data(loan), cellshm_loan_seq(loan));
        status = cellshm_loan_publish(loan, size, NULL);
    }
    pthread_mutex_unlock(&publishing);
    return status;
}

/* Topic.close {name} */
static uint32_t topic_close(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    const uint8_t *at = request, *end = request + len;
    char name[64];
    cellshm_status status = CELLSHM_NOT_FOUND;
    (void)userdata;
    (void)reply;
    if (!take_str(&at, end, name, sizeof name)) {
        return CELLSHM_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&publishing);
    if (publisher != NULL && strcmp(name, published) == 0) {
        cellshm_publisher_free(publisher);
        publisher = NULL;
        status = CELLSHM_OK;
    }
    pthread_mutex_unlock(&publishing);
    return status;
}

static int add_stream(const char *name, cellshm_stream_handler_fn handler) {
    registrations++;
    if (cellshm_cell_register_stream(the_cell, name, handler, &frees, count_free) != CELLSHM_OK) {
        fprintf(stderr, "test_cell: registering %s: %s\n", name, cellshm_last_error_message());
        return 0;
    }
    return 1;
}

static int add(const char *name, cellshm_handler_fn handler) {
    registrations++;
    if (cellshm_cell_register(the_cell, name, handler, &frees, count_free) != CELLSHM_OK) {
        fprintf(stderr, "test_cell: registering %s: %s\n", name, cellshm_last_error_message());
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    cellshm_status status = cellshm_cell_new(argc, (const char *const *)argv, &the_cell);
    if (status != CELLSHM_OK) {
        fprintf(stderr, "test_cell: %s\n", cellshm_last_error_message());
        return 2;
    }
    if (!add("Echo.echo", echo) || !add("Test.write", write_copy) || !add("Test.sleep", sleep_ms) ||
        !add("Test.fail", fail) || !add("Test.call_host", call_host) || !add("Test.log", log_line) ||
        !add_stream("Stream.count", stream_count) || !add_stream("Stream.sum", stream_sum) ||
        !add_stream("Stream.forever", stream_forever) || !add("Test.wait_cancel", wait_cancel) ||
        !add("Test.cancels_seen", get_cancels_seen) || !add("Test.env", env_value) || !add("Test.log_fields", log_fields) ||
        !add("Topic.read", topic_read) || !add("Topic.open", topic_open) || !add("Topic.send", topic_send) ||
        !add("Topic.close", topic_close)) {
        cellshm_cell_free(the_cell);
        return 2;
    }
    /* A duplicate name is refused, and its userdata is freed at once. */
    registrations++;
    if (cellshm_cell_register(the_cell, "Echo.echo", echo, &frees, count_free) != CELLSHM_ALREADY_EXISTS || frees != 1) {
        fprintf(stderr, "test_cell: duplicate registration was not refused cleanly\n");
        return 3;
    }
    status = cellshm_cell_run(the_cell);
    cellshm_publisher_free(publisher);
    cellshm_cell_free(the_cell);
    if (frees != registrations) {
        fprintf(stderr, "test_cell: %d userdata frees for %d registrations\n", frees, registrations);
        return 3;
    }
    return status == CELLSHM_OK ? 0 : 1;
}
