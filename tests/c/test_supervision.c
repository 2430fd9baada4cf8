/* The supervisor, attach and log filters through the C API.
 *   test_supervision TEST_CELL
 * It also runs itself as an attaching cell: test_supervision --attach-cell HUB NAME */
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

extern char **environ;

static int events = 0;
static int frees = 0;
static char last_reason[128];

static void on_event(void *userdata, const char *name, uint32_t status, const char *reason) {
    (void)userdata;
    (void)name;
    (void)status;
    events++;
    snprintf(last_reason, sizeof last_reason, "%s", reason);
}

static void count_free(void *userdata) {
    (*(int *)userdata)++;
}

static uint32_t echo(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    (void)userdata;
    return cellshm_reply_write(reply, request, len);
}

static int attach_cell(const char *hub_name, const char *name) {
    cellshm_cell *cell = NULL;
    cellshm_status status;
    CHECK_STATUS(cellshm_cell_attach(hub_name, name, &cell), CELLSHM_OK);
    CHECK_STATUS(cellshm_cell_register(cell, "Echo.echo", echo, NULL, NULL), CELLSHM_OK);
    CHECK_STATUS(cellshm_cell_log_event(cell, 3, "c.attach", "attached from C"), CELLSHM_OK);
    status = cellshm_cell_run(cell);
    cellshm_cell_free(cell);
    return status == CELLSHM_OK ? 0 : 1;
}

static void supervised(const char *test_cell) {
    cellshm_supervisor *sup = NULL;
    cellshm_restart_policy policy = cellshm_restart_policy_default();
    const char *env[] = {"CELLSHM_QUIET=1", NULL};
    cellshm_response *response = NULL;
    uint32_t status = 99;
    uint32_t first;
    int exit_code = -1;

    policy.initial_backoff_ms = 10;
    policy.max_backoff_ms = 50;
    CHECK_STATUS(cellshm_supervisor_new(NULL, 4, &sup), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_on_event(sup, on_event, &frees, count_free, NULL), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_on_event(sup, NULL, &frees, count_free, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK(frees == 1); /* a refused registration frees its userdata at once */
    frees = 0;
    CHECK_STATUS(cellshm_supervisor_add(sup, "echo", test_cell, NULL, env, &policy), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_add(sup, "echo", test_cell, NULL, env, &policy), CELLSHM_ALREADY_EXISTS);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "echo", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_call(sup, "echo", "Echo.echo", (const uint8_t *)"one", 3, NULL, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == 3);
    cellshm_response_free(response);
    first = cellshm_supervisor_pid(sup, "echo");
    CHECK(first != 0);
    CHECK(kill((pid_t)first, SIGKILL) == 0);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "echo", CELLSHM_CELL_CRASHED, 5000), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "echo", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    CHECK(cellshm_supervisor_pid(sup, "echo") != first);
    CHECK_STATUS(cellshm_supervisor_call(sup, "echo", "Echo.echo", (const uint8_t *)"two", 3, NULL, &response), CELLSHM_OK);
    cellshm_response_free(response);
    CHECK_STATUS(cellshm_supervisor_stop(sup, "echo", 3000, &exit_code), CELLSHM_OK);
    CHECK(exit_code == 0);
    CHECK_STATUS(cellshm_supervisor_status(sup, "echo", &status), CELLSHM_OK);
    CHECK(status == CELLSHM_CELL_EXITED);
    CHECK(strstr(last_reason, "stopped") != NULL);
    CHECK_STATUS(cellshm_supervisor_call(sup, "echo", "Echo.echo", (const uint8_t *)"x", 1, NULL, &response), CELLSHM_UNAVAILABLE);
    CHECK_STATUS(cellshm_supervisor_status(sup, "nobody", &status), CELLSHM_NOT_FOUND);
    CHECK(events >= 7);
    cellshm_supervisor_free(sup);
    CHECK(frees == 1);
}

/* Every status a listener saw, as CELLSHM_CELL_* numbers. */
typedef struct {
    uint32_t statuses[64];
    int count;
} recorded;

static void record(void *userdata, const char *name, uint32_t status, const char *reason) {
    recorded *r = (recorded *)userdata;
    (void)name;
    (void)reason;
    if (r->count < 64) {
        r->statuses[r->count++] = status;
    }
}

static int recorded_frees = 0;

static void free_recorded(void *userdata) {
    (void)userdata;
    recorded_frees++;
}

static void expect_env(cellshm_supervisor *sup, const char *value) {
    cellshm_response *response = NULL;
    CHECK_STATUS(cellshm_supervisor_call(sup, "w", "Test.env", (const uint8_t *)"FLAVOUR", 7, NULL, &response),
                 CELLSHM_OK);
    CHECK(cellshm_response_len(response) == strlen(value));
    CHECK(memcmp(cellshm_response_data(response), value, strlen(value)) == 0);
    cellshm_response_free(response);
}

/* restart, update, stop, start and remove, each event once and in order. */
static void operations(const char *test_cell) {
    static const uint32_t expected[] = {
        CELLSHM_CELL_STARTING, CELLSHM_CELL_READY,                                             /* add */
        CELLSHM_CELL_STOPPING, CELLSHM_CELL_EXITED, CELLSHM_CELL_STARTING, CELLSHM_CELL_READY, /* restart */
        CELLSHM_CELL_STOPPING, CELLSHM_CELL_EXITED, CELLSHM_CELL_STARTING, CELLSHM_CELL_READY, /* update */
        CELLSHM_CELL_STOPPING, CELLSHM_CELL_EXITED,                                            /* stop */
        CELLSHM_CELL_STARTING, CELLSHM_CELL_READY,                                             /* start */
        CELLSHM_CELL_STOPPING, CELLSHM_CELL_EXITED, CELLSHM_CELL_REMOVED,                      /* remove */
    };
    cellshm_supervisor *sup = NULL;
    cellshm_subscription *subscription = NULL;
    recorded seen;
    const char *plain[] = {"CELLSHM_QUIET=1", "FLAVOUR=plain", NULL};
    const char *spicy[] = {"CELLSHM_QUIET=1", "FLAVOUR=spicy", NULL};
    uint32_t first;
    uint32_t status;
    int exit_code = -1;
    size_t i;

    memset(&seen, 0, sizeof seen);
    CHECK_STATUS(cellshm_supervisor_new(NULL, 4, &sup), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_on_event(sup, record, &seen, free_recorded, &subscription), CELLSHM_OK);
    CHECK(subscription != NULL);
    CHECK_STATUS(cellshm_supervisor_restart(sup, "w", 1000), CELLSHM_NOT_FOUND);
    CHECK_STATUS(cellshm_supervisor_add(sup, "w", test_cell, NULL, plain, NULL), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "w", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    expect_env(sup, "plain");
    first = cellshm_supervisor_pid(sup, "w");

    CHECK_STATUS(cellshm_supervisor_restart(sup, "w", 3000), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "w", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    CHECK(cellshm_supervisor_pid(sup, "w") != first);

    CHECK_STATUS(cellshm_supervisor_update(sup, "w", test_cell, NULL, spicy, NULL, 3000), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "w", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    expect_env(sup, "spicy");
    CHECK_STATUS(cellshm_supervisor_update(sup, "nobody", test_cell, NULL, spicy, NULL, 3000), CELLSHM_NOT_FOUND);

    CHECK_STATUS(cellshm_supervisor_stop(sup, "w", 3000, &exit_code), CELLSHM_OK);
    CHECK(exit_code == 0);
    CHECK_STATUS(cellshm_supervisor_start(sup, "w"), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "w", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    expect_env(sup, "spicy");

    CHECK_STATUS(cellshm_supervisor_remove(sup, "w", 3000), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_status(sup, "w", &status), CELLSHM_NOT_FOUND);
    CHECK(seen.count == (int)(sizeof expected / sizeof expected[0]));
    for (i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        CHECK(seen.statuses[i] == expected[i]);
    }

    /* Freed: no more events reach it, and its userdata is released once. */
    cellshm_subscription_free(subscription);
    CHECK(recorded_frees == 1);
    CHECK_STATUS(cellshm_supervisor_add(sup, "w", test_cell, NULL, plain, NULL), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "w", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    CHECK(seen.count == (int)(sizeof expected / sizeof expected[0]));
    cellshm_supervisor_free(sup);
    CHECK(recorded_frees == 1);
    cellshm_subscription_free(NULL);
}

static uint32_t last_status = 99;
static char last_crash[128];

static void note_crash(void *userdata, const char *name, uint32_t status, const char *reason) {
    (void)userdata;
    (void)name;
    last_status = status;
    if (status == CELLSHM_CELL_CRASHED) {
        snprintf(last_crash, sizeof last_crash, "%s", reason);
    }
}

/* A cell whose only handler thread is stuck: a call without a time limit of its own ends
 * at the default timeout, and the heartbeat relaunches the cell as unresponsive. */
static void hung(const char *test_cell) {
    cellshm_supervisor *sup = NULL;
    cellshm_restart_policy policy = cellshm_restart_policy_default();
    const char *env[] = {"CELLSHM_QUIET=1", "CELLSHM_WORKERS=1", NULL};
    const uint8_t minute[4] = {0x60, 0xea, 0, 0}; /* 60000 ms */
    cellshm_response *response = NULL;
    cellshm_call_options forever = cellshm_call_options_default();
    uint32_t first;

    policy.initial_backoff_ms = 10;
    policy.heartbeat_interval_ms = 100;
    policy.heartbeat_allowed_misses = 2;
    CHECK_STATUS(cellshm_supervisor_new(NULL, 4, &sup), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_set_default_timeout(sup, 300), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_on_event(sup, note_crash, NULL, NULL, NULL), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_add(sup, "stuck", test_cell, NULL, env, &policy), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "stuck", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    first = cellshm_supervisor_pid(sup, "stuck");
    CHECK_STATUS(cellshm_supervisor_call(sup, "stuck", "Test.sleep", minute, 4, NULL, &response),
                 CELLSHM_DEADLINE_EXCEEDED);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "stuck", CELLSHM_CELL_CRASHED, 5000), CELLSHM_OK);
    CHECK(strcmp(last_crash, "unresponsive") == 0);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "stuck", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    CHECK(cellshm_supervisor_pid(sup, "stuck") != first);
    /* No limit, asked for explicitly: a 500 ms call outlives the 300 ms default (on a cell
     * without heartbeats, which would take a thread busy that long for a hung one). */
    CHECK_STATUS(cellshm_supervisor_add(sup, "patient", test_cell, NULL, env, NULL), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "patient", CELLSHM_CELL_READY, 10000), CELLSHM_OK);
    forever.timeout_ms = CELLSHM_TIMEOUT_FOREVER;
    {
        const uint8_t half[4] = {0xf4, 0x01, 0, 0}; /* 500 ms */
        CHECK_STATUS(cellshm_supervisor_call(sup, "patient", "Test.sleep", half, 4, NULL, &response),
                     CELLSHM_DEADLINE_EXCEEDED);
        CHECK_STATUS(cellshm_supervisor_call(sup, "patient", "Test.sleep", half, 4, &forever, &response), CELLSHM_OK);
        cellshm_response_free(response);
    }
    cellshm_supervisor_free(sup);
}

static void attached(const char *self) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peer = NULL;
    cellshm_response *response = NULL;
    pid_t pid;
    int wstatus;
    int i;
    char *argv[5];

    CHECK_STATUS(cellshm_hub_new(NULL, 4, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_enable_attach(hub, NULL, 0), CELLSHM_OK);
    argv[0] = (char *)self;
    argv[1] = (char *)"--attach-cell";
    argv[2] = (char *)cellshm_hub_name(hub);
    argv[3] = (char *)"visitor";
    argv[4] = NULL;
    CHECK(posix_spawn(&pid, self, NULL, NULL, argv, environ) == 0);
    for (i = 0; i < 1000 && cellshm_hub_find_peer(hub, "visitor", &peer) != CELLSHM_OK; i++) {
        usleep(10 * 1000);
    }
    CHECK(peer != NULL);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);
    CHECK(cellshm_peer_pid(peer) == (uint32_t)pid);
    CHECK_STATUS(cellshm_peer_call(peer, "Echo.echo", (const uint8_t *)"visit", 5, NULL, &response), CELLSHM_OK);
    cellshm_response_free(response);
    {
        cellshm_method_list *methods = NULL;
        size_t n;
        int found = 0;
        CHECK_STATUS(cellshm_peer_methods(peer, 5000, &methods), CELLSHM_OK);
        for (n = 0; n < cellshm_method_list_len(methods); n++) {
            if (strcmp(cellshm_method_list_name(methods, n), "Echo.echo") == 0) {
                found = cellshm_method_list_id(methods, n) == cellshm_method_id("Echo.echo");
            }
        }
        CHECK(found);
        CHECK(cellshm_method_list_name(methods, 1000) == NULL);
        cellshm_method_list_free(methods);
    }
    CHECK_STATUS(cellshm_peer_set_log_filter(peer, "error", 5000), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_set_log_filter(peer, "loud", 5000), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_peer_kill(peer), CELLSHM_FAILED_PRECONDITION);
    CHECK_STATUS(cellshm_hub_find_peer(hub, "nobody", &peer), CELLSHM_NOT_FOUND);
    CHECK_STATUS(cellshm_peer_shutdown(peer, 3000), CELLSHM_OK);
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--attach-cell") == 0) {
        return attach_cell(argv[2], argv[3]);
    }
    CHECK(argc == 2);
    supervised(argv[1]);
    operations(argv[1]);
    hung(argv[1]);
    attached(argv[0]);
    printf("test_supervision: all checks passed\n");
    return 0;
}
