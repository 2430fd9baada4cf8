/* Hub configuration through the C API: options that can grow (a size field first: hub,
 * peer and call options, restart policies; a program built against an older, shorter
 * struct keeps the defaults of the fields it lacks), every limit checked with a message
 * naming it, and 8 MiB payloads both ways once the hub has 8 MiB slots (a default hub
 * refuses them with PAYLOAD_TOO_LARGE).
 *   test_hub_options TEST_CELL */
#include "check.h"

#define BIG (8u << 20)

static void refused(cellshm_hub_options options, const char *what) {
    cellshm_hub *hub = NULL;
    CHECK_STATUS(cellshm_hub_new_with(NULL, &options, &hub), CELLSHM_INVALID_ARGUMENT);
    CHECK(hub == NULL);
    if (strstr(cellshm_last_error_message(), what) == NULL) {
        fprintf(stderr, "expected %s in: %s\n", what, cellshm_last_error_message());
        exit(1);
    }
}

static uint32_t no_answer(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    (void)userdata;
    (void)request;
    (void)len;
    (void)reply;
    return CELLSHM_OK;
}

/* `status` is `expected` and the message names `what`. */
static void expect(cellshm_status status, cellshm_status expected, const char *what) {
    CHECK_STATUS(status, expected);
    if (strstr(cellshm_last_error_message(), what) == NULL) {
        fprintf(stderr, "expected %s in: %s\n", what, cellshm_last_error_message());
        exit(1);
    }
}

/* Cell names follow one rule whether spawned or supervised; method names are checked
 * when registered; a restart policy is checked when it is used. */
static void check_names_and_policies(const char *cell) {
    static char long_name[100001];
    cellshm_hub *hub = NULL;
    cellshm_supervisor *sup = NULL;
    cellshm_peer *peer = NULL;
    cellshm_restart_policy policy = cellshm_restart_policy_default();
    const char *bad_names[] = {"", "a\nb", long_name};
    size_t i;
    memset(long_name, 'x', sizeof long_name - 1);
    CHECK_STATUS(cellshm_hub_new(NULL, 0, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_new(NULL, 0, &sup), CELLSHM_OK);
    for (i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        expect(cellshm_hub_spawn(hub, bad_names[i], cell, NULL, NULL, NULL, &peer), CELLSHM_INVALID_ARGUMENT, "cell name");
        CHECK(peer == NULL);
        expect(cellshm_supervisor_add(sup, bad_names[i], cell, NULL, NULL, NULL), CELLSHM_INVALID_ARGUMENT, "cell name");
        expect(cellshm_hub_register(hub, bad_names[i], no_answer, NULL, NULL), CELLSHM_INVALID_ARGUMENT, "method name");
    }
    policy.initial_backoff_ms = 1000;
    policy.max_backoff_ms = 10;
    expect(cellshm_supervisor_add(sup, "a", cell, NULL, NULL, &policy), CELLSHM_INVALID_ARGUMENT, "max_backoff");
    {
        uint32_t operator_uid = 12345;
        CHECK_STATUS(cellshm_hub_enable_inspect(hub, &operator_uid, 1), CELLSHM_OK);
        CHECK_STATUS(cellshm_hub_enable_inspect(hub, NULL, 0), CELLSHM_OK);
        expect(cellshm_hub_enable_inspect(hub, NULL, 2), CELLSHM_INVALID_ARGUMENT, "uids is NULL");
        expect(cellshm_hub_enable_inspect(NULL, &operator_uid, 1), CELLSHM_INVALID_ARGUMENT, "hub is NULL");
    }
    policy = cellshm_restart_policy_default();
    policy.ready_timeout_ms = 0;
    expect(cellshm_supervisor_add(sup, "a", cell, NULL, NULL, &policy), CELLSHM_INVALID_ARGUMENT, "ready timeout");
    /* An older policy that ends before ready_timeout_ms: the 0 past its size is not read
     * (the default 10 s is used), and the cell comes up. */
    policy.size = offsetof(cellshm_restart_policy, ready_timeout_ms);
    CHECK_STATUS(cellshm_supervisor_add(sup, "older", cell, NULL, NULL, &policy), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "older", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    policy.size = 0;
    expect(cellshm_supervisor_add(sup, "b", cell, NULL, NULL, &policy), CELLSHM_INVALID_ARGUMENT,
           "cellshm_restart_policy.size");
    cellshm_supervisor_free(sup);
    cellshm_hub_free(hub);
}

int main(int argc, char **argv) {
    const char *env[] = {"CELLSHM_QUIET=1", NULL};
    cellshm_hub_options options = cellshm_hub_options_default();
    cellshm_peer_options peers = cellshm_peer_options_default();
    cellshm_peer_options bad_peers;
    cellshm_call_options call_options = cellshm_call_options_default();
    cellshm_hub_options bad;
    cellshm_hub *hub = NULL;
    cellshm_hub *small = NULL;
    cellshm_peer *peer = NULL;
    cellshm_response *response = NULL;
    uint8_t *request;
    const uint8_t *answer;
    size_t i;

    CHECK(argc == 2);
    CHECK(options.size == sizeof(cellshm_hub_options));
    CHECK(options.slot_class_count == 4 && options.slot_classes[3].slot_size == (1u << 20));

    bad = options;
    bad.slot_class_count = CELLSHM_MAX_SLOT_CLASSES + 1;
    refused(bad, "slot_class_count");
    bad = options;
    bad.ring_capacity = 100;
    refused(bad, "ring_capacity");
    bad = options;
    bad.slot_classes[1].slot_size = 100;
    refused(bad, "slot_size");
    bad = options;
    bad.size = 0;
    refused(bad, "size");
    bad = options;
    bad.peer_defaults = &bad_peers;
    bad_peers = peers;
    bad_peers.stream_window = 0;
    refused(bad, "stream_window");
    bad_peers = peers;
    bad_peers.server_threads = 0;
    refused(bad, "server_threads");
    bad_peers = peers;
    bad_peers.doorbell_fd = -1;
    refused(bad, "doorbell_fd -1");
    bad_peers = peers;
    bad_peers.doorbell_fd = 1;
    refused(bad, "doorbell_fd 1");
    bad_peers = peers;
    bad_peers.wait = CELLSHM_WAIT_ADAPTIVE;
    bad_peers.spin_us = UINT32_MAX;
    refused(bad, "spin");
    bad_peers = peers;
    bad_peers.size = 0;
    refused(bad, "cellshm_peer_options.size");
    /* An older peer options struct that ends before stream_window: the 0 past its size
     * is not read (the default window is used). */
    bad_peers = peers;
    bad_peers.size = offsetof(cellshm_peer_options, stream_window);
    bad_peers.stream_window = 0;
    CHECK_STATUS(cellshm_hub_new_with(NULL, &bad, &small), CELLSHM_OK);
    cellshm_hub_free(small);
    check_names_and_policies(argv[1]);

    /* A program built against an older, shorter struct: the fields it does not know
     * keep their defaults (here, everything after max_peers). */
    bad = options;
    bad.size = offsetof(cellshm_hub_options, ring_capacity);
    bad.max_peers = 3;
    bad.ring_capacity = 100; /* not read: past the size it declared */
    CHECK_STATUS(cellshm_hub_new_with(NULL, &bad, &small), CELLSHM_OK);
    cellshm_hub_free(small);

    options.slot_classes[4].slot_size = BIG;
    options.slot_classes[4].slot_count = 2;
    options.slot_class_count = 5;
    peers.stream_window = 32;
    peers.server_threads = 3;
    options.peer_defaults = &peers;
    CHECK_STATUS(cellshm_hub_new_with("c-hub-options", &options, &hub), CELLSHM_OK);
    CHECK(strcmp(cellshm_hub_name(hub), "c-hub-options") == 0);
    CHECK_STATUS(cellshm_hub_spawn(hub, "big", argv[1], NULL, env, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);
    CHECK(cellshm_peer_max_payload(peer) == BIG);

    request = malloc(BIG);
    CHECK(request != NULL);
    for (i = 0; i < BIG; i++) {
        request[i] = (uint8_t)(i * 7 + i / 4096);
    }
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", request, BIG, NULL, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == BIG);
    answer = cellshm_response_data(response);
    CHECK(memcmp(answer, request, BIG) == 0);
    cellshm_response_free(response);
    /* Call options: a zeroed struct is refused; an older one that ends before
     * deadline_ns does not read the (past) deadline beyond it. */
    memset(&call_options, 0, sizeof call_options);
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", request, 8, &call_options, &response), CELLSHM_INVALID_ARGUMENT);
    CHECK(strstr(cellshm_last_error_message(), "cellshm_call_options.size") != NULL);
    call_options = cellshm_call_options_default();
    call_options.deadline_ns = 1;
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", request, 8, &call_options, &response), CELLSHM_DEADLINE_EXCEEDED);
    call_options.size = offsetof(cellshm_call_options, deadline_ns);
    call_options.timeout_ms = 10000;
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", request, 8, &call_options, &response), CELLSHM_OK);
    cellshm_response_free(response);
    /* One byte more than the largest slot: refused before anything is sent. */
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", request, 0, NULL, &response), CELLSHM_OK);
    cellshm_response_free(response);
    free(request);
    request = calloc(1, BIG + 1);
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", request, BIG + 1, NULL, &response), CELLSHM_PAYLOAD_TOO_LARGE);
    free(request);

    CHECK_STATUS(cellshm_peer_shutdown(peer, 3000), CELLSHM_OK);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);

    /* A default hub carries at most 1 MiB. */
    CHECK_STATUS(cellshm_hub_new_with(NULL, NULL, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_spawn(hub, "default", argv[1], NULL, env, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);
    CHECK(cellshm_peer_max_payload(peer) == (1u << 20));
    request = calloc(1, BIG);
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", request, BIG, NULL, &response), CELLSHM_PAYLOAD_TOO_LARGE);
    free(request);
    CHECK_STATUS(cellshm_peer_shutdown(peer, 3000), CELLSHM_OK);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
    printf("test_hub_options: all checks passed\n");
    return 0;
}
