/* Caller identity and permissions through the C API: a host method allowed to cell "a"
 * only, its handler seeing a's name and pid, "b" refused with PERMISSION_DENIED before the
 * handler (and counted), then a policy callback instead of the list.
 *   test_identity TEST_CELL */
#include <pthread.h>
#include <unistd.h>

#include "check.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int handled = 0;
static char seen_name[64];
static uint32_t seen_pid = 0;
static uint32_t seen_uid = 0;
static int policy_frees = 0;

static uint32_t host_echo(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    cellshm_caller caller;
    (void)userdata;
    if (cellshm_reply_caller(reply, &caller) != CELLSHM_OK) {
        cellshm_reply_error_message(reply, cellshm_last_error_message());
        return CELLSHM_INTERNAL;
    }
    pthread_mutex_lock(&lock);
    handled++;
    snprintf(seen_name, sizeof seen_name, "%s", caller.name);
    seen_pid = caller.pid;
    seen_uid = caller.uid;
    pthread_mutex_unlock(&lock);
    return cellshm_reply_write(reply, request, len);
}

/* Admits the cell whose pid is *userdata. */
static bool only_pid(void *userdata, const cellshm_caller *caller, const char *method) {
    return strcmp(method, "Host.echo") != 0 || caller->pid == *(uint32_t *)userdata;
}

static void count_policy_free(void *userdata) {
    (void)userdata;
    policy_frees++;
}

static cellshm_status call_host(cellshm_peer *peer, const char *text) {
    cellshm_response *response = NULL;
    cellshm_status status = cellshm_peer_call(peer, "Test.call_host", (const uint8_t *)text, strlen(text), NULL, &response);
    if (status == CELLSHM_OK) {
        CHECK(cellshm_response_len(response) == strlen(text));
        cellshm_response_free(response);
    }
    return status;
}

int main(int argc, char **argv) {
    const char *only_a[] = {"a", NULL};
    const char *env[] = {"CELLSHM_QUIET=1", NULL};
    cellshm_hub *hub = NULL;
    cellshm_peer *a = NULL;
    cellshm_peer *b = NULL;
    uint32_t a_pid;

    CHECK(argc == 2);
    CHECK_STATUS(cellshm_hub_new(NULL, 4, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_register(hub, "Host.echo", host_echo, NULL, NULL), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_allow(hub, "Host.echo", only_a), CELLSHM_OK);
    /* A rule for a method not served here (a cell's, through a gateway) is kept by name. */
    CHECK_STATUS(cellshm_hub_allow(hub, "Host.nothing", only_a), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_allow(NULL, "Host.echo", only_a), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_hub_spawn(hub, "a", argv[1], NULL, env, NULL, &a), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_spawn(hub, "b", argv[1], NULL, env, NULL, &b), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(a, 10000), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(b, 10000), CELLSHM_OK);
    a_pid = cellshm_peer_pid(a);

    CHECK_STATUS(call_host(a, "from a"), CELLSHM_OK);
    CHECK_STATUS(call_host(b, "from b"), CELLSHM_PERMISSION_DENIED);
    CHECK(strstr(cellshm_last_error_message(), "allow list") != NULL);
    CHECK(handled == 1);
    CHECK(strcmp(seen_name, "a") == 0);
    CHECK(seen_pid == a_pid);
    CHECK(seen_uid == (uint32_t)getuid());
    CHECK(cellshm_peer_refused_calls(a) == 0);
    CHECK(cellshm_peer_refused_calls(b) == 1);

    /* A policy instead of the list: admits a's pid only. */
    CHECK_STATUS(cellshm_hub_allow_everyone(hub, "Host.echo"), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_set_access_policy(hub, only_pid, &a_pid, count_policy_free), CELLSHM_OK);
    CHECK_STATUS(call_host(a, "again"), CELLSHM_OK);
    CHECK_STATUS(call_host(b, "again"), CELLSHM_PERMISSION_DENIED);
    CHECK(strstr(cellshm_last_error_message(), "policy") != NULL);
    CHECK(cellshm_peer_refused_calls(b) == 2);
    CHECK_STATUS(cellshm_hub_set_access_policy(hub, NULL, NULL, NULL), CELLSHM_OK);
    CHECK(policy_frees == 1);
    CHECK_STATUS(call_host(b, "free"), CELLSHM_OK);
    CHECK(handled == 3);
    CHECK(strcmp(seen_name, "b") == 0);

    CHECK_STATUS(cellshm_peer_shutdown(a, 3000), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_shutdown(b, 3000), CELLSHM_OK);
    cellshm_peer_free(a);
    cellshm_peer_free(b);
    cellshm_hub_free(hub);
    printf("test_identity: all checks passed\n");
    return 0;
}
