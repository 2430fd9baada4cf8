/* Publish/subscribe through the C API: a C host publishes to itself, a C cell and a Rust
 * cell (every sample in order under Block); drop-oldest gaps with exact counts,
 * disconnect_after, history for a late joiner, loans, a C cell publishing to the host,
 * a killed publisher's end, and wrong arguments.
 *   test_topics TEST_CELL RUST_TESTKIT */
#include <pthread.h>

#include "check.h"

#define SAMPLES 100000u

static void put_u64(uint8_t *out, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) {
        out[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t u64_at(const uint8_t *b) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) {
        v = v << 8 | b[i];
    }
    return v;
}

/* A Topic.read / Topic.open / Topic.send body: a string, then u32s. */
static size_t body(uint8_t *out, const char *name, int count, const uint32_t *values) {
    size_t len = strlen(name), at = 4 + len;
    int i;
    put_u32(out, (uint32_t)len);
    memcpy(out + 4, name, len);
    for (i = 0; i < count; i++, at += 4) {
        put_u32(out + at, values[i]);
    }
    return at;
}

/* A call made on its own thread: the cell's Topic.read returns only once it has read. */
typedef struct {
    cellshm_peer *peer;
    const char *method;
    uint8_t request[128];
    size_t request_len;
    cellshm_status status;
    uint8_t reply[64];
    size_t reply_len;
    pthread_t thread;
} call_t;

static void *call_thread(void *arg) {
    call_t *c = (call_t *)arg;
    cellshm_response *response = NULL;
    cellshm_call_options options = cellshm_call_options_default();
    options.timeout_ms = 120000;
    c->status = cellshm_peer_call(c->peer, c->method, c->request, c->request_len, &options, &response);
    if (c->status == CELLSHM_OK) {
        c->reply_len = cellshm_response_len(response);
        if (c->reply_len <= sizeof c->reply) {
            memcpy(c->reply, cellshm_response_data(response), c->reply_len);
        }
        cellshm_response_free(response);
    } else {
        fprintf(stderr, "%s: %s\n", c->method, cellshm_last_error_message());
    }
    return NULL;
}

static void start_call(call_t *c, cellshm_peer *peer, const char *method, const char *name, int count,
                       const uint32_t *values) {
    memset(c, 0, sizeof *c);
    c->peer = peer;
    c->method = method;
    c->request_len = body(c->request, name, count, values);
    CHECK(pthread_create(&c->thread, NULL, call_thread, c) == 0);
}

static void call_now(cellshm_peer *peer, const char *method, const char *name, int count, const uint32_t *values) {
    call_t c;
    start_call(&c, peer, method, name, count, values);
    CHECK(pthread_join(c.thread, NULL) == 0);
    CHECK_STATUS(c.status, CELLSHM_OK);
}

/* The host's own Block subscriber, reading on its own thread. */
typedef struct {
    cellshm_subscriber *subscriber;
    uint64_t received, out_of_order;
    pthread_t thread;
} reader_t;

static void *read_all(void *arg) {
    reader_t *r = (reader_t *)arg;
    cellshm_sample *sample = NULL;
    while (r->received < SAMPLES) {
        CHECK_STATUS(cellshm_subscriber_next(r->subscriber, 30000, &sample), CELLSHM_OK);
        CHECK(sample != NULL);
        r->received++;
        if (cellshm_sample_seq(sample) != r->received || u64_at(cellshm_sample_data(sample)) != r->received ||
            cellshm_sample_missed(sample) != 0 || cellshm_sample_len(sample) != 64) {
            r->out_of_order++;
        }
        cellshm_sample_free(sample);
    }
    return NULL;
}

static void check_read_reply(const call_t *c, uint64_t count) {
    CHECK_STATUS(c->status, CELLSHM_OK);
    CHECK(c->reply_len == 28);
    CHECK(u64_at(c->reply) == count);      /* received */
    CHECK(u64_at(c->reply + 8) == 0);      /* missed */
    CHECK(u64_at(c->reply + 16) == count); /* last seq */
    CHECK(c->reply[24] == 0);              /* not ended early */
}

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *c_cell = NULL, *rust_cell = NULL;
    cellshm_publisher *publisher = NULL, *unset_publisher = NULL;
    cellshm_subscriber *subscriber = NULL, *unset_subscriber = NULL;
    cellshm_sample *sample = NULL;
    cellshm_loan *loan = NULL;
    cellshm_topic_options topic = cellshm_topic_options_default();
    cellshm_subscriber_options block = cellshm_subscriber_options_default();
    cellshm_subscriber_options options = cellshm_subscriber_options_default();
    const char *const rust_args[] = {"cell", NULL};
    uint8_t sample_bytes[64] = {0}, too_big[65] = {0};
    uint32_t i;
    uint64_t seq = 0;
    reader_t host_reader;
    call_t c_read, rust_read;
    struct timespec start;

    CHECK(argc == 3);
    block.policy = CELLSHM_TOPIC_BLOCK;
    CHECK_STATUS(cellshm_hub_new(NULL, 0, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_spawn(hub, "c-cell", argv[1], NULL, NULL, NULL, &c_cell), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_spawn(hub, "rust-cell", argv[2], rust_args, NULL, NULL, &rust_cell), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(c_cell, 10000), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(rust_cell, 10000), CELLSHM_OK);

    /* Wrong arguments: clear errors, nothing written. */
    CHECK_STATUS(cellshm_hub_publish(NULL, "t", NULL, &publisher), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_hub_publish(hub, NULL, NULL, &publisher), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_hub_publish(hub, "t", NULL, NULL), CELLSHM_INVALID_ARGUMENT);
    topic.size = 0;
    CHECK_STATUS(cellshm_hub_publish(hub, "t", &topic, &unset_publisher), CELLSHM_INVALID_ARGUMENT);
    topic = cellshm_topic_options_default();
    topic.depth = 3;
    CHECK_STATUS(cellshm_hub_publish(hub, "t", &topic, &unset_publisher), CELLSHM_INVALID_ARGUMENT);
    CHECK(strstr(cellshm_last_error_message(), "power of two") != NULL);
    CHECK_STATUS(cellshm_hub_subscribe(hub, "nothing", NULL, &unset_subscriber), CELLSHM_NOT_FOUND);
    options.policy = 9;
    CHECK_STATUS(cellshm_hub_subscribe(hub, "nothing", &options, &unset_subscriber), CELLSHM_INVALID_ARGUMENT);
    options = cellshm_subscriber_options_default();
    options.wait = 7;
    CHECK_STATUS(cellshm_hub_subscribe(hub, "nothing", &options, &unset_subscriber), CELLSHM_INVALID_ARGUMENT);
    CHECK(unset_publisher == NULL && unset_subscriber == NULL);
    CHECK_STATUS(cellshm_publisher_publish(NULL, sample_bytes, 8, 0, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_subscriber_next(NULL, 0, &sample), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_loan_publish(NULL, 0, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK(cellshm_sample_data(NULL) == NULL && cellshm_sample_len(NULL) == 0 && cellshm_sample_seq(NULL) == 0);
    CHECK(cellshm_loan_data(NULL) == NULL && cellshm_loan_capacity(NULL) == 0 && cellshm_loan_seq(NULL) == 0);
    CHECK(cellshm_publisher_subscribers(NULL) == 0 && cellshm_subscriber_dropped(NULL) == 0);
    cellshm_publisher_free(NULL);
    cellshm_subscriber_free(NULL);
    cellshm_sample_free(NULL);
    cellshm_loan_free(NULL);

    /* Fan-out: the host, a C cell and a Rust cell each get every sample, in order. */
    topic = cellshm_topic_options_default();
    topic.sample_size = 64;
    topic.depth = 64;
    CHECK_STATUS(cellshm_hub_publish(hub, "numbers", &topic, &publisher), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_publish(hub, "numbers", &topic, &unset_publisher), CELLSHM_ALREADY_EXISTS);
    CHECK_STATUS(cellshm_hub_subscribe(hub, "numbers", &block, &host_reader.subscriber), CELLSHM_OK);
    {
        uint32_t read_args[3] = {CELLSHM_TOPIC_BLOCK, 0, SAMPLES};
        start_call(&c_read, c_cell, "Topic.read", "numbers", 3, read_args);
        start_call(&rust_read, rust_cell, "Topic.read", "numbers", 3, read_args);
    }
    CHECK_STATUS(cellshm_publisher_wait_subscribers(publisher, 3, 30000), CELLSHM_OK);
    host_reader.received = host_reader.out_of_order = 0;
    CHECK(pthread_create(&host_reader.thread, NULL, read_all, &host_reader) == 0);
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (i = 1; i <= SAMPLES; i++) {
        put_u64(sample_bytes, i);
        CHECK_STATUS(cellshm_publisher_publish(publisher, sample_bytes, sizeof sample_bytes, 30000, &seq), CELLSHM_OK);
        CHECK(seq == i);
    }
    CHECK(pthread_join(host_reader.thread, NULL) == 0);
    CHECK(pthread_join(c_read.thread, NULL) == 0);
    CHECK(pthread_join(rust_read.thread, NULL) == 0);
    printf("%u samples of 64 B to the host, a C cell and a Rust cell in %.2f s\n", SAMPLES, seconds_since(&start));
    CHECK(host_reader.received == SAMPLES && host_reader.out_of_order == 0);
    check_read_reply(&c_read, SAMPLES);
    check_read_reply(&rust_read, SAMPLES);
    cellshm_subscriber_free(host_reader.subscriber);
    /* The cells' Block subscriptions end once their unsubscribe reached the host. */
    CHECK_STATUS(cellshm_publisher_wait_subscribers(publisher, 0, 30000), CELLSHM_OK);
    CHECK_STATUS(cellshm_publisher_wait_subscribers(publisher, 1, 0), CELLSHM_DEADLINE_EXCEEDED);
    CHECK_STATUS(cellshm_publisher_wait_subscribers(NULL, 0, 0), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_publisher_publish(publisher, too_big, sizeof too_big, 0, NULL), CELLSHM_INVALID_ARGUMENT);

    /* Loans: written in place; given back unpublished; a length past the slot refused. */
    CHECK_STATUS(cellshm_hub_subscribe(hub, "numbers", &block, &subscriber), CELLSHM_OK);
    CHECK_STATUS(cellshm_publisher_loan(publisher, 1000, &loan), CELLSHM_OK);
    CHECK(cellshm_loan_capacity(loan) == 64 && cellshm_loan_seq(loan) == SAMPLES + 1);
    cellshm_loan_free(loan);
    CHECK_STATUS(cellshm_publisher_loan(publisher, 1000, &loan), CELLSHM_OK);
    CHECK_STATUS(cellshm_loan_publish(loan, 65, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_publisher_loan(publisher, CELLSHM_TIMEOUT_FOREVER, &loan), CELLSHM_OK);
    memcpy(cellshm_loan_data(loan), "in place", 8);
    CHECK_STATUS(cellshm_loan_publish(loan, 8, &seq), CELLSHM_OK);
    CHECK(seq == SAMPLES + 1);
    CHECK_STATUS(cellshm_subscriber_next(subscriber, CELLSHM_TIMEOUT_FOREVER, &sample), CELLSHM_OK);
    CHECK(sample != NULL && cellshm_sample_len(sample) == 8 && memcmp(cellshm_sample_data(sample), "in place", 8) == 0);
    cellshm_sample_free(sample);
    CHECK_STATUS(cellshm_subscriber_next(subscriber, 0, &sample), CELLSHM_OK);
    CHECK(sample == NULL);
    cellshm_subscriber_free(subscriber);

    /* Drop-oldest: a subscriber that does not read sees the gap with its exact count. */
    options = cellshm_subscriber_options_default();
    CHECK_STATUS(cellshm_hub_subscribe(hub, "numbers", &options, &subscriber), CELLSHM_OK);
    for (i = 0; i < 100; i++) {
        CHECK_STATUS(cellshm_publisher_publish(publisher, sample_bytes, 8, 0, &seq), CELLSHM_OK);
    }
    CHECK_STATUS(cellshm_subscriber_next(subscriber, 1000, &sample), CELLSHM_OK);
    CHECK(cellshm_sample_seq(sample) == seq - 63 && cellshm_sample_missed(sample) == 36);
    CHECK(cellshm_subscriber_dropped(subscriber) == 36);
    cellshm_sample_free(sample);
    cellshm_subscriber_free(subscriber);

    /* disconnect_after: a subscriber 4 behind is detached with a status it can read. */
    options.policy = CELLSHM_TOPIC_DISCONNECT_AFTER;
    options.disconnect_after = 4;
    CHECK_STATUS(cellshm_hub_subscribe(hub, "numbers", &options, &subscriber), CELLSHM_OK);
    for (i = 0; i < 10; i++) {
        CHECK_STATUS(cellshm_publisher_publish(publisher, sample_bytes, 8, 0, NULL), CELLSHM_OK);
    }
    for (;;) {
        cellshm_status status = cellshm_subscriber_next(subscriber, 1000, &sample);
        if (status != CELLSHM_OK) {
            CHECK_STATUS(status, CELLSHM_RESOURCE_EXHAUSTED);
            CHECK(strstr(cellshm_last_error_message(), "lagged") != NULL);
            break;
        }
        CHECK(sample != NULL);
        cellshm_sample_free(sample);
    }
    cellshm_subscriber_free(subscriber);
    cellshm_publisher_free(publisher);

    /* History: a subscriber joining after 100 samples with history 10 reads the last 10. */
    topic.history = 10;
    CHECK_STATUS(cellshm_hub_publish(hub, "history", &topic, &publisher), CELLSHM_OK);
    for (i = 1; i <= 100; i++) {
        put_u64(sample_bytes, i);
        CHECK_STATUS(cellshm_publisher_publish(publisher, sample_bytes, 64, 0, NULL), CELLSHM_OK);
    }
    CHECK_STATUS(cellshm_hub_subscribe(hub, "history", &block, &subscriber), CELLSHM_OK);
    for (i = 91; i <= 100; i++) {
        CHECK_STATUS(cellshm_subscriber_next(subscriber, 1000, &sample), CELLSHM_OK);
        CHECK(sample != NULL && cellshm_sample_seq(sample) == i && u64_at(cellshm_sample_data(sample)) == i);
        cellshm_sample_free(sample);
    }
    /* Closing the topic: the subscriber sees its end. */
    cellshm_publisher_free(publisher);
    CHECK_STATUS(cellshm_subscriber_next(subscriber, 1000, &sample), CELLSHM_UNAVAILABLE);
    cellshm_subscriber_free(subscriber);

    /* Waiting on two subscribers at once: the one that gets a sample is ready. */
    {
        cellshm_publisher *one = NULL, *two = NULL;
        cellshm_subscriber *subs[2] = {NULL, NULL};
        uint8_t ready[2] = {9, 9};
        size_t count = 9;
        CHECK_STATUS(cellshm_hub_publish(hub, "one", NULL, &one), CELLSHM_OK);
        CHECK_STATUS(cellshm_hub_publish(hub, "two", NULL, &two), CELLSHM_OK);
        CHECK_STATUS(cellshm_hub_subscribe(hub, "one", NULL, &subs[0]), CELLSHM_OK);
        CHECK_STATUS(cellshm_hub_subscribe(hub, "two", NULL, &subs[1]), CELLSHM_OK);
        CHECK_STATUS(cellshm_subscribers_wait((const cellshm_subscriber *const *)subs, 2, 0, ready, &count), CELLSHM_OK);
        CHECK(count == 0 && ready[0] == 0 && ready[1] == 0);
        CHECK_STATUS(cellshm_publisher_publish(two, sample_bytes, 8, 0, NULL), CELLSHM_OK);
        CHECK_STATUS(cellshm_subscribers_wait((const cellshm_subscriber *const *)subs, 2, 1000, ready, &count),
                     CELLSHM_OK);
        CHECK(count == 1 && ready[0] == 0 && ready[1] == 1);
        CHECK_STATUS(cellshm_subscribers_wait(NULL, 1, 0, ready, NULL), CELLSHM_INVALID_ARGUMENT);
        CHECK_STATUS(cellshm_subscribers_wait((const cellshm_subscriber *const *)subs, 2, 0, NULL, NULL),
                     CELLSHM_INVALID_ARGUMENT);
        cellshm_subscriber_free(subs[0]);
        cellshm_subscriber_free(subs[1]);
        cellshm_publisher_free(one);
        cellshm_publisher_free(two);
    }

    /* A last-value topic: the current value at once, then only the newest. */
    topic = cellshm_topic_options_last_value(64);
    CHECK(topic.depth == 1 && topic.history == 1 && topic.sample_size == 64);
    CHECK_STATUS(cellshm_hub_publish(hub, "board", &topic, &publisher), CELLSHM_OK);
    for (i = 1; i <= 5; i++) {
        put_u64(sample_bytes, i);
        CHECK_STATUS(cellshm_publisher_publish(publisher, sample_bytes, 64, 0, NULL), CELLSHM_OK);
    }
    CHECK_STATUS(cellshm_hub_subscribe(hub, "board", NULL, &subscriber), CELLSHM_OK);
    CHECK_STATUS(cellshm_subscriber_latest(subscriber, &sample), CELLSHM_OK);
    CHECK(sample != NULL && cellshm_sample_seq(sample) == 5 && u64_at(cellshm_sample_data(sample)) == 5);
    cellshm_sample_free(sample);
    CHECK_STATUS(cellshm_subscriber_latest(subscriber, &sample), CELLSHM_OK);
    CHECK(sample == NULL);
    for (i = 6; i <= 9; i++) {
        put_u64(sample_bytes, i);
        CHECK_STATUS(cellshm_publisher_publish(publisher, sample_bytes, 64, 0, NULL), CELLSHM_OK);
    }
    CHECK_STATUS(cellshm_subscriber_latest(subscriber, &sample), CELLSHM_OK);
    CHECK(sample != NULL && cellshm_sample_seq(sample) == 9 && cellshm_sample_missed(sample) == 3);
    cellshm_sample_free(sample);
    cellshm_subscriber_free(subscriber);
    cellshm_publisher_free(publisher);

    /* Events: 8 bytes at most, coalesced while nobody reads. */
    topic = cellshm_topic_options_events();
    CHECK_STATUS(cellshm_hub_publish(hub, "ticks", &topic, &publisher), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_subscribe(hub, "ticks", NULL, &subscriber), CELLSHM_OK);
    for (i = 1; i <= 3; i++) {
        CHECK_STATUS(cellshm_publisher_publish(publisher, NULL, 0, 0, NULL), CELLSHM_OK);
    }
    CHECK_STATUS(cellshm_publisher_publish(publisher, sample_bytes, 9, 0, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_subscriber_next(subscriber, 1000, &sample), CELLSHM_OK);
    CHECK(sample != NULL && cellshm_sample_seq(sample) == 3 && cellshm_sample_missed(sample) == 2);
    CHECK(cellshm_sample_len(sample) == 0);
    cellshm_sample_free(sample);
    cellshm_subscriber_free(subscriber);
    cellshm_publisher_free(publisher);

    /* A C cell publishes (loaned slots, 100 B each); the host reads every sample. */
    {
        uint32_t open_args[2] = {128, 16}, send_args[2] = {1000, 100};
        call_t send;
        call_now(c_cell, "Topic.open", "from-c", 2, open_args);
        CHECK_STATUS(cellshm_hub_subscribe(hub, "from-c", &block, &subscriber), CELLSHM_OK);
        start_call(&send, c_cell, "Topic.send", "from-c", 2, send_args);
        for (i = 1; i <= 1000; i++) {
            CHECK_STATUS(cellshm_subscriber_next(subscriber, 30000, &sample), CELLSHM_OK);
            CHECK(sample != NULL && cellshm_sample_seq(sample) == i && cellshm_sample_len(sample) == 100);
            CHECK(u64_at(cellshm_sample_data(sample)) == i);
            cellshm_sample_free(sample);
        }
        CHECK(pthread_join(send.thread, NULL) == 0);
        CHECK_STATUS(send.status, CELLSHM_OK);
        call_now(c_cell, "Topic.close", "from-c", 0, NULL);
        CHECK_STATUS(cellshm_subscriber_next(subscriber, 5000, &sample), CELLSHM_UNAVAILABLE);
        cellshm_subscriber_free(subscriber);
    }

    /* A publisher killed: its subscriber sees the end, not a silence. */
    {
        uint32_t open_args[2] = {64, 16};
        int exit_code = 0;
        call_now(c_cell, "Topic.open", "doomed", 2, open_args);
        CHECK_STATUS(cellshm_hub_subscribe(hub, "doomed", &block, &subscriber), CELLSHM_OK);
        clock_gettime(CLOCK_MONOTONIC, &start);
        CHECK_STATUS(cellshm_peer_kill(c_cell), CELLSHM_OK);
        CHECK_STATUS(cellshm_subscriber_next(subscriber, 30000, &sample), CELLSHM_PEER_DEAD);
        printf("a killed publisher's end seen in %.1f ms\n", seconds_since(&start) * 1e3);
        cellshm_subscriber_free(subscriber);
        CHECK_STATUS(cellshm_peer_wait_exit(c_cell, 10000, &exit_code), CELLSHM_OK);
    }

    cellshm_peer_free(c_cell);
    cellshm_peer_free(rust_cell);
    cellshm_hub_free(hub);
    printf("c topics ok\n");
    return 0;
}
