/* Streams through the C API, C host to C cell: server streaming in order, client
 * streaming with a checksum, cancellation, errors, and wrong arguments.
 *   test_streams TEST_CELL */
#include "check.h"

static uint32_t u32_at(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t u64_at(const uint8_t *b) {
    return (uint64_t)u32_at(b) | (uint64_t)u32_at(b + 4) << 32;
}

static int freed;
static void count_free(void *userdata) {
    (void)userdata;
    freed++;
}

static uint32_t no_stream(void *userdata, const uint8_t *request, size_t len, cellshm_stream_call *call) {
    (void)userdata;
    (void)request;
    (void)len;
    (void)call;
    return CELLSHM_OK;
}

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peer = NULL;
    cellshm_stream *stream = NULL;
    cellshm_stream_item *item = NULL;
    cellshm_response *response = NULL;
    cellshm_call_options options = cellshm_call_options_default();
    uint8_t request[8];
    static uint8_t chunk[65536];
    uint64_t hash = 0xcbf29ce484222325ull, total = 0;
    uint32_t i, received = 0;
    size_t j;

    options.timeout_ms = 30000;
    CHECK(argc == 2);
    CHECK_STATUS(cellshm_hub_new(NULL, 0, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_spawn(hub, "streams", argv[1], NULL, NULL, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);

    /* Server streaming: 5000 items of 100 bytes, in order, then the end (NULL item). */
    put_u32(request, 5000);
    put_u32(request + 4, 100);
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.count", request, 8, &options, &stream), CELLSHM_OK);
    for (;;) {
        CHECK_STATUS(cellshm_stream_next(stream, &item), CELLSHM_OK);
        if (item == NULL) {
            break;
        }
        CHECK(cellshm_stream_item_len(item) == 100);
        CHECK(u32_at(cellshm_stream_item_data(item)) == received);
        received++;
        cellshm_stream_item_free(item);
    }
    CHECK(received == 5000);
    cellshm_stream_free(stream);

    /* Client streaming: 32 MiB in 64 KiB chunks, checksummed by the cell. */
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.sum", NULL, 0, &options, &stream), CELLSHM_OK);
    for (i = 0; i < 512; i++) {
        for (j = 0; j < sizeof chunk; j++) {
            chunk[j] = (uint8_t)(j * 7 + i);
            hash = (hash ^ chunk[j]) * 0x100000001b3ull;
        }
        total += sizeof chunk;
        CHECK_STATUS(cellshm_stream_send(stream, chunk, sizeof chunk), CELLSHM_OK);
    }
    CHECK_STATUS(cellshm_stream_finish(stream, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == 16);
    CHECK(u64_at(cellshm_response_data(response)) == total);
    CHECK(u64_at(cellshm_response_data(response) + 8) == hash);
    cellshm_response_free(response);
    /* A finished stream refuses more work, clearly. */
    CHECK_STATUS(cellshm_stream_send(stream, chunk, 1), CELLSHM_FAILED_PRECONDITION);
    cellshm_stream_free(stream);

    /* Cancellation: the next call reports CANCELLED; the peer keeps serving. */
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.forever", NULL, 0, &options, &stream), CELLSHM_OK);
    for (i = 0; i < 100; i++) {
        CHECK_STATUS(cellshm_stream_next(stream, &item), CELLSHM_OK);
        CHECK(item != NULL);
        cellshm_stream_item_free(item);
    }
    CHECK_STATUS(cellshm_stream_cancel(stream), CELLSHM_OK);
    CHECK_STATUS(cellshm_stream_cancel(stream), CELLSHM_OK);
    item = NULL;
    CHECK_STATUS(cellshm_stream_next(stream, &item), CELLSHM_CANCELLED);
    CHECK(item == NULL);
    cellshm_stream_free(stream);
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", (const uint8_t *)"ok", 2, &options, &response), CELLSHM_OK);
    cellshm_response_free(response);

    /* Freeing an unfinished stream cancels it too. */
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.forever", NULL, 0, &options, &stream), CELLSHM_OK);
    CHECK_STATUS(cellshm_stream_next(stream, &item), CELLSHM_OK);
    cellshm_stream_item_free(item);
    cellshm_stream_free(stream);

    /* Errors: the handler's status and message; unknown methods; bad arguments. */
    put_u32(request, 1);
    put_u32(request + 4, 1);
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.count", request, 8, &options, &stream), CELLSHM_OK);
    CHECK_STATUS(cellshm_stream_next(stream, &item), CELLSHM_INVALID_ARGUMENT);
    CHECK(strstr(cellshm_last_error_message(), "Stream.count wants") != NULL);
    cellshm_stream_free(stream);
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.nope", NULL, 0, &options, &stream), CELLSHM_OK);
    CHECK_STATUS(cellshm_stream_next(stream, &item), CELLSHM_UNIMPLEMENTED);
    cellshm_stream_free(stream);
    CHECK_STATUS(cellshm_peer_open_stream(peer, "Stream.count", request, 8, &options, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_stream_next(NULL, &item), CELLSHM_INVALID_ARGUMENT);
    CHECK(cellshm_stream_item_len(NULL) == 0);
    cellshm_stream_free(NULL);
    cellshm_stream_item_free(NULL);

    /* A unary handler sees its caller's deadline pass (cellshm_reply_cancelled). */
    {
        cellshm_call_options short_timeout = cellshm_call_options_default();
        cellshm_call_options wait = cellshm_call_options_default();
        int polls;
        short_timeout.timeout_ms = 50;
        wait.timeout_ms = 5000;
        CHECK_STATUS(cellshm_peer_call(peer, "Test.wait_cancel", NULL, 0, &short_timeout, &response),
                     CELLSHM_DEADLINE_EXCEEDED);
        for (polls = 0; polls < 1000; polls++) {
            struct timespec ts = {0, 1000000L};
            CHECK_STATUS(cellshm_peer_call(peer, "Test.cancels_seen", NULL, 0, &wait, &response), CELLSHM_OK);
            received = u32_at(cellshm_response_data(response));
            cellshm_response_free(response);
            if (received == 1) {
                break;
            }
            nanosleep(&ts, NULL);
        }
        CHECK(received == 1);
    }

    /* A stream method's kind: not unary, not an unknown number; the userdata of a
     * refused registration is released once, that of an accepted one with the hub. */
    CHECK_STATUS(cellshm_hub_register_stream_kind(hub, "Kind.unary", CELLSHM_METHOD_UNARY, no_stream, NULL, count_free),
                 CELLSHM_INVALID_ARGUMENT);
    CHECK(strstr(cellshm_last_error_message(), "not a stream kind") != NULL);
    CHECK_STATUS(cellshm_hub_register_stream_kind(hub, "Kind.nine", 9, no_stream, NULL, count_free),
                 CELLSHM_INVALID_ARGUMENT);
    CHECK(freed == 2);
    CHECK_STATUS(cellshm_hub_register_stream_kind(hub, "Kind.bidi", CELLSHM_METHOD_BIDI, no_stream, NULL, count_free),
                 CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_register_stream_kind(hub, "Kind.bidi", CELLSHM_METHOD_BIDI, no_stream, NULL, count_free),
                 CELLSHM_ALREADY_EXISTS);
    CHECK(freed == 3);

    CHECK_STATUS(cellshm_peer_shutdown(peer, 3000), CELLSHM_OK);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
    CHECK(freed == 4);
    printf("test_streams: 5000 items in order, 32 MiB checksummed, cancel and errors as expected\n");
    return 0;
}
