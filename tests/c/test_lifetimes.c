/* Lifetimes the header promises: userdata released when its registration ends (before the
 * function that ended it returns, even while peer handles live), a stream's end seen
 * the same way whichever thread ended it, and a unary call in flight cancelled from
 * another thread.
 *   test_lifetimes TEST_CELL */
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "check.h"

static int frees = 0;

static void count_free(void *userdata) {
    (void)userdata;
    frees++;
}

static uint32_t host_echo(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    (void)userdata;
    return (uint32_t)cellshm_reply_write(reply, request, len);
}

static void sink(void *userdata, const cellshm_log_record *record) {
    (void)userdata;
    (void)record;
}

static bool admit_all(void *userdata, const cellshm_caller *caller, const char *method) {
    (void)userdata;
    (void)caller;
    (void)method;
    return true;
}

typedef struct {
    cellshm_stream *stream;
    cellshm_status status;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t changed;
} reader;

/* Reads items until the stream ends; the status that ended it is in r->status. */
static void *read_all(void *arg) {
    reader *r = arg;
    cellshm_stream_item *item = NULL;
    cellshm_status status;
    pthread_mutex_lock(&r->lock);
    r->started = 1;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
    while ((status = cellshm_stream_next(r->stream, &item)) == CELLSHM_OK && item != NULL) {
        cellshm_stream_item_free(item);
    }
    r->status = status;
    return NULL;
}

/* Starts a reader of a new Stream.forever and waits until it reads. */
static void start_reader(cellshm_peer *peer, reader *r, pthread_t *thread) {
    cellshm_stream_item *item = NULL;
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->changed, NULL);
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.forever", NULL, 0, NULL, &r->stream), CELLSHM_OK);
    /* The stream flows before the reader starts. */
    CHECK_STATUS(cellshm_stream_next(r->stream, &item), CELLSHM_OK);
    CHECK(item != NULL);
    cellshm_stream_item_free(item);
    CHECK(pthread_create(thread, NULL, read_all, r) == 0);
    pthread_mutex_lock(&r->lock);
    while (!r->started) {
        pthread_cond_wait(&r->changed, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
}

typedef struct {
    cellshm_stream *stream;
    cellshm_status status;
    volatile long tid; /* set before it calls next */
} waiter;

/* Calls next once; the stream yields nothing until it is cancelled. */
static void *wait_once(void *arg) {
    waiter *w = arg;
    cellshm_stream_item *item = NULL;
    __atomic_store_n(&w->tid, (long)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
    w->status = cellshm_stream_next(w->stream, &item);
    return NULL;
}

/* Waits (for an event the kernel reports: the thread's state) until the thread whose id
 * `*thread_id` will hold sleeps, which after setting it it does only in the library's
 * wait it is about to make. */
static void wait_until_asleep(volatile long *thread_id) {
    char path[64], stat[512];
    long tid;
    int tries;
    for (tries = 0; tries < 100000; tries++) {
        FILE *f;
        const char *state;
        size_t n;
        tid = __atomic_load_n(thread_id, __ATOMIC_SEQ_CST);
        if (tid == 0) {
            sched_yield();
            continue;
        }
        snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
        f = fopen(path, "r");
        CHECK(f != NULL);
        n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        state = strrchr(stat, ')');
        if (state != NULL && state[1] == ' ' && state[2] == 'S') {
            return;
        }
        usleep(200);
    }
    CHECK(!"the thread never went to sleep in the library's wait");
}

static uint32_t cancels_seen(cellshm_peer *peer) {
    cellshm_response *response = NULL;
    uint32_t n;
    CHECK_STATUS(cellshm_peer_call(peer, "Test.cancels_seen", NULL, 0, NULL, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == 4);
    memcpy(&n, cellshm_response_data(response), 4);
    cellshm_response_free(response);
    return n;
}

typedef struct {
    cellshm_call *call;
    volatile long waiting_tid; /* the thread that waits for the call */
} canceller;

static void *cancel_soon(void *arg) {
    canceller *c = arg;
    /* Once the waiting thread sleeps in cellshm_call_wait. */
    wait_until_asleep(&c->waiting_tid);
    CHECK_STATUS(cellshm_call_cancel(c->call), CELLSHM_OK);
    return NULL;
}

static void check_call_in_flight(cellshm_peer *peer) {
    cellshm_call *call = NULL;
    cellshm_response *response = NULL;
    uint32_t before = cancels_seen(peer);
    canceller c;
    pthread_t thread;
    int tries;

    CHECK_STATUS(cellshm_peer_call_start(peer, "Echo.echo", (const uint8_t *)"hi", 2, NULL, &call), CELLSHM_OK);
    CHECK_STATUS(cellshm_call_wait(call, CELLSHM_TIMEOUT_FOREVER, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == 2 && memcmp(cellshm_response_data(response), "hi", 2) == 0);
    cellshm_response_free(response);
    CHECK(cellshm_call_is_done(call) == 1);
    CHECK_STATUS(cellshm_call_wait(call, 0, &response), CELLSHM_FAILED_PRECONDITION);
    CHECK_STATUS(cellshm_call_cancel(call), CELLSHM_OK); /* answered: nothing to cancel */
    cellshm_call_free(call);

    /* Test.wait_cancel runs until it sees a cancel (or 5 s pass). */
    CHECK_STATUS(cellshm_peer_call_start(peer, "Test.wait_cancel", NULL, 0, NULL, &call), CELLSHM_OK);
    CHECK_STATUS(cellshm_call_wait(call, 0, &response), CELLSHM_DEADLINE_EXCEEDED);
    CHECK(cellshm_call_is_done(call) == 0);
    c.call = call;
    c.waiting_tid = (long)syscall(SYS_gettid);
    CHECK(pthread_create(&thread, NULL, cancel_soon, &c) == 0);
    CHECK_STATUS(cellshm_call_wait(call, CELLSHM_TIMEOUT_FOREVER, &response), CELLSHM_CANCELLED);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(cellshm_call_is_done(call) == 1);
    cellshm_call_free(call);
    for (tries = 0; cancels_seen(peer) == before; tries++) {
        CHECK(tries < 5000); /* the handler sees it within its 5 s */
        usleep(1000);
    }

    /* Freed while out: cancelled too. */
    before = cancels_seen(peer);
    CHECK_STATUS(cellshm_peer_call_start(peer, "Test.wait_cancel", NULL, 0, NULL, &call), CELLSHM_OK);
    cellshm_call_free(call);
    for (tries = 0; cancels_seen(peer) == before; tries++) {
        CHECK(tries < 5000);
        usleep(1000);
    }
    CHECK_STATUS(cellshm_peer_call_start(NULL, "Echo.echo", NULL, 0, NULL, &call), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_call_wait(NULL, 0, &response), CELLSHM_INVALID_ARGUMENT);
    CHECK(cellshm_call_is_done(NULL) == 0);
    cellshm_call_free(NULL);
}

int main(int argc, char **argv) {
    const char *env[] = {"CELLSHM_QUIET=1", NULL};
    cellshm_hub *hub = NULL;
    cellshm_peer *peer = NULL;
    cellshm_stream *stream = NULL;
    cellshm_stream_item *item = NULL;
    cellshm_response *response = NULL;
    uint8_t request[8];
    reader r;
    waiter w;
    pthread_t thread;
    int code = -1;

    CHECK(argc == 2);
    CHECK_STATUS(cellshm_hub_new(NULL, 0, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_register(hub, "Host.echo", host_echo, NULL, count_free), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_set_log_sink(hub, sink, NULL, count_free), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_set_access_policy(hub, admit_all, NULL, count_free), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_spawn(hub, "cell", argv[1], NULL, env, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);

    /* Replacing the policy releases the old one's userdata before it returns. */
    CHECK_STATUS(cellshm_hub_set_access_policy(hub, admit_all, NULL, count_free), CELLSHM_OK);
    CHECK(frees == 1);

    /* A stream that ended successfully says so again and again. */
    put_u32(request, 3);
    put_u32(request + 4, 16);
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.count", request, 8, NULL, &stream), CELLSHM_OK);
    while (cellshm_stream_next(stream, &item) == CELLSHM_OK && item != NULL) {
        cellshm_stream_item_free(item);
    }
    CHECK(item == NULL);
    CHECK_STATUS(cellshm_stream_next(stream, &item), CELLSHM_OK);
    CHECK(item == NULL);
    cellshm_stream_free(stream);

    /* Cancelled by this thread: the next call says CANCELLED, as a thread already waiting
     * in next is told. */
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.forever", NULL, 0, NULL, &stream), CELLSHM_OK);
    CHECK_STATUS(cellshm_stream_cancel(stream), CELLSHM_OK);
    CHECK_STATUS(cellshm_stream_next(stream, &item), CELLSHM_CANCELLED);
    CHECK_STATUS(cellshm_stream_send(stream, request, 1), CELLSHM_CANCELLED);
    CHECK_STATUS(cellshm_stream_cancel(stream), CELLSHM_OK);
    cellshm_stream_free(stream);

    /* Cancelled by another thread while one reads. */
    start_reader(peer, &r, &thread);
    CHECK_STATUS(cellshm_stream_cancel(r.stream), CELLSHM_OK);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK_STATUS(r.status, CELLSHM_CANCELLED);
    CHECK_STATUS(cellshm_stream_next(r.stream, &item), CELLSHM_CANCELLED);
    cellshm_stream_free(r.stream);

    /* Freed while another thread is blocked in next (Stream.sum sends nothing until the
     * caller finishes): the free cancels, waits for that thread to leave the stream, and
     * returns (no hang, no use after free under ASan). */
    memset(&w, 0, sizeof w);
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.sum", NULL, 0, NULL, &w.stream), CELLSHM_OK);
    CHECK(pthread_create(&thread, NULL, wait_once, &w) == 0);
    wait_until_asleep(&w.tid);
    cellshm_stream_free(w.stream);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK_STATUS(w.status, CELLSHM_CANCELLED);

    /* A unary call in flight: waited for with a limit, cancelled from another thread
     * while this one waits, seen cancelled by the handler. */
    check_call_in_flight(peer);

    /* The peer still serves. */
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", request, 4, NULL, &response), CELLSHM_OK);
    cellshm_response_free(response);

    /* Freeing the hub releases the userdata of its handler, log sink and access policy
     * before it returns, although the peer handle lives on. */
    cellshm_hub_free(hub);
    CHECK(frees == 4);
    CHECK_STATUS(cellshm_peer_wait_exit(peer, 5000, &code), CELLSHM_OK);
    CHECK(code == 0);
    cellshm_peer_free(peer);
    printf("test_lifetimes: all checks passed\n");
    return 0;
}
