/* Errors through the C API: unknown method, deadline, handler error with message,
 * payload too large, NULL arguments, cell killed mid-call, plus calls in both
 * directions and the host-side userdata contract.   test_errors TEST_CELL */
#include <pthread.h>
#include <unistd.h>

#include "check.h"

static int host_frees = 0;
static int deaths = 0;
static uint32_t death_status = 0;
static char death_message[256];

static void count_free(void *userdata) {
    (*(int *)userdata)++;
}

static void on_death(void *userdata, uint32_t status, const char *message) {
    (void)userdata;
    deaths++;
    death_status = status;
    snprintf(death_message, sizeof death_message, "%s", message);
}

static uint32_t host_echo(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    uint8_t *buffer = NULL;
    cellshm_status status;
    (void)userdata;
    status = cellshm_reply_buffer(reply, len + 5, &buffer);
    if (status != CELLSHM_OK) {
        return status;
    }
    memcpy(buffer, "host:", 5);
    if (len > 0) {
        memcpy(buffer + 5, request, len);
    }
    return CELLSHM_OK;
}

struct slow_call {
    cellshm_peer *peer;
    cellshm_status status;
};

static void *call_slowly(void *arg) {
    struct slow_call *call = (struct slow_call *)arg;
    uint8_t request[4];
    cellshm_response *response = NULL;
    put_u32(request, 10000);
    call->status = cellshm_peer_call(call->peer, "Test.sleep", request, sizeof request, NULL, &response);
    cellshm_response_free(response);
    return NULL;
}

static cellshm_peer *spawn(cellshm_hub *hub, const char *name, const char *program) {
    cellshm_peer *peer = NULL;
    const char *env[] = {"CELLSHM_QUIET=1", NULL};
    CHECK_STATUS(cellshm_hub_spawn(hub, name, program, NULL, env, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);
    return peer;
}

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peer;
    cellshm_peer *victim;
    cellshm_response *response = (cellshm_response *)0x1; /* sentinel: must stay untouched on failure */
    cellshm_response *sentinel = response;
    cellshm_call_options short_timeout = cellshm_call_options_default();
    cellshm_peer_state state;
    struct timespec start;
    uint8_t request[300];
    uint8_t *big;
    const char *why = "widget 7 is missing";
    int exit_code = -1;

    short_timeout.timeout_ms = 50;
    CHECK(argc == 2);
    CHECK_STATUS(cellshm_hub_new(NULL, 4, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_register(hub, "Host.echo", host_echo, &host_frees, count_free), CELLSHM_OK);
    /* A duplicate host method is refused and its userdata freed at once. */
    CHECK_STATUS(cellshm_hub_register(hub, "Host.echo", host_echo, &host_frees, count_free), CELLSHM_ALREADY_EXISTS);
    CHECK(host_frees == 1);
    peer = spawn(hub, "errors", argv[1]);

    /* NULL and invalid arguments: INVALID_ARGUMENT, out-parameters untouched. */
    CHECK_STATUS(cellshm_peer_call(NULL, "Echo.echo", request, 4, NULL, &response), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_peer_call(peer, NULL, request, 4, NULL, &response), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", NULL, 4, NULL, &response), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", request, 4, NULL, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK(response == sentinel);
    CHECK(strstr(cellshm_last_error_message(), "NULL") != NULL);
    CHECK_STATUS(cellshm_hub_spawn(hub, "x", NULL, NULL, NULL, NULL, &victim), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_hub_new(NULL, 0, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_peer_wait_ready(NULL, 0), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_cell_new(1, NULL, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_hub_register(hub, "No.handler", NULL, NULL, NULL), CELLSHM_INVALID_ARGUMENT);
    {
        cellshm_peer_options bad = cellshm_peer_options_default();
        bad.wait = 77;
        CHECK_STATUS(cellshm_hub_spawn(hub, "x", argv[1], NULL, NULL, &bad, &victim), CELLSHM_INVALID_ARGUMENT);
    }
    CHECK(cellshm_method_id(NULL) == 0);
    CHECK(cellshm_method_id("Echo.echo") == 0x3e895c50u);
    CHECK(strcmp(cellshm_status_str(CELLSHM_PEER_DEAD), "PEER_DEAD") == 0);
    CHECK(strcmp(cellshm_status_str(12345), "UNRECOGNIZED_STATUS") == 0);
    CHECK(strlen(cellshm_version()) > 0);
    cellshm_response_free(NULL);
    cellshm_peer_free(NULL);
    cellshm_hub_free(NULL);
    cellshm_cell_free(NULL);

    /* Both reply paths, and a call from the cell back to the host. */
    memset(request, 'a', sizeof request);
    CHECK_STATUS(cellshm_peer_call(peer, "Test.write", request, sizeof request, NULL, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == sizeof request && memcmp(cellshm_response_data(response), request, sizeof request) == 0);
    cellshm_response_free(response);
    CHECK_STATUS(cellshm_peer_call(peer, "Test.call_host", (const uint8_t *)"ping", 4, NULL, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == 9 && memcmp(cellshm_response_data(response), "host:ping", 9) == 0);
    cellshm_response_free(response);
    CHECK_STATUS(cellshm_peer_notify(peer, "Test.log", (const uint8_t *)"a log line from C", 17), CELLSHM_OK);

    /* Unknown method: UNIMPLEMENTED, and the message names what was called. */
    response = sentinel;
    CHECK_STATUS(cellshm_peer_call(peer, "No.such", request, 4, NULL, &response), CELLSHM_UNIMPLEMENTED);
    CHECK(strstr(cellshm_last_error_message(), "No.such") != NULL);
    CHECK(response == sentinel);

    /* Deadline: a 50 ms timeout on a 500 ms handler. */
    put_u32(request, 500);
    clock_gettime(CLOCK_MONOTONIC, &start);
    CHECK_STATUS(cellshm_peer_call(peer, "Test.sleep", request, 4, &short_timeout, &response), CELLSHM_DEADLINE_EXCEEDED);
    CHECK(seconds_since(&start) < 0.4);

    /* A handler error carries its status and message. */
    put_u32(request, CELLSHM_NOT_FOUND);
    memcpy(request + 4, why, strlen(why));
    CHECK_STATUS(cellshm_peer_call(peer, "Test.fail", request, 4 + strlen(why), NULL, &response), CELLSHM_NOT_FOUND);
    CHECK(strstr(cellshm_last_error_message(), why) != NULL);

    /* Payload too large: refused before anything is sent. */
    big = (uint8_t *)calloc((1 << 20) + 1, 1);
    CHECK(big != NULL);
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", big, (1 << 20) + 1, NULL, &response), CELLSHM_PAYLOAD_TOO_LARGE);
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", big, 1 << 20, NULL, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == (1u << 20));
    cellshm_response_free(response);
    free(big);

    /* A cell killed in the middle of a call: PEER_DEAD within a second. */
    victim = spawn(hub, "victim", argv[1]);
    CHECK_STATUS(cellshm_peer_on_death(victim, on_death, &host_frees, count_free), CELLSHM_OK);
    {
        pthread_t thread;
        struct slow_call call;
        call.peer = victim;
        call.status = CELLSHM_OK;
        CHECK(pthread_create(&thread, NULL, call_slowly, &call) == 0);
        usleep(100 * 1000);
        clock_gettime(CLOCK_MONOTONIC, &start);
        CHECK_STATUS(cellshm_peer_kill(victim), CELLSHM_OK);
        CHECK(pthread_join(thread, NULL) == 0);
        CHECK(call.status == CELLSHM_PEER_DEAD);
        CHECK(seconds_since(&start) < 1.0);
    }
    CHECK(deaths == 1 && death_status == CELLSHM_PEER_DEAD);
    CHECK(host_frees == 2); /* the death callback's userdata, released after it ran */
    CHECK_STATUS(cellshm_peer_get_state(victim, &state), CELLSHM_OK);
    CHECK(state == CELLSHM_PEER_STATE_DEAD);
    CHECK_STATUS(cellshm_peer_wait_exit(victim, 5000, &exit_code), CELLSHM_OK);
    CHECK(exit_code == 128 + 9);
    cellshm_peer_free(victim);

    /* The first cell was unaffected, then leaves cleanly (its own userdata check passes). */
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", (const uint8_t *)"still here", 10, NULL, &response), CELLSHM_OK);
    cellshm_response_free(response);
    CHECK_STATUS(cellshm_peer_get_state(peer, &state), CELLSHM_OK);
    CHECK(state == CELLSHM_PEER_STATE_READY);
    CHECK_STATUS(cellshm_peer_shutdown(peer, 3000), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_exit(peer, 0, &exit_code), CELLSHM_OK);
    CHECK(exit_code == 0);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
    CHECK(host_frees == 3); /* Host.echo's userdata, released with the hub */
    printf("test_errors: all checks passed\n");
    return 0;
}
