/* Logs and metrics through the C API: a C host's sink receives a C cell's records with their fields,
 * location and time, and the library's own notices (a cell lost), marked as notices.
 *   test_logs TEST_CELL */
#include <pthread.h>
#include <signal.h>

#include "check.h"

typedef struct {
    int count;
    uint32_t level;
    char cell[64];
    char target[64];
    char message[256];
    char fields[256];
    char file[256];
    uint32_t line;
    uint64_t time_unix_ns;
} seen_record;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static seen_record last_record;
static seen_record last_notice;
static int sink_frees = 0;

static void sink(void *userdata, const cellshm_log_record *record) {
    seen_record *into;
    size_t i;
    (void)userdata;
    pthread_mutex_lock(&lock);
    into = record->notice ? &last_notice : &last_record;
    /* Only the notice that the cell this test kills was lost. */
    if (!record->notice || (strcmp(record->cell, "victim") == 0 && strstr(record->message, "peer lost") != NULL)) {
        into->count++;
        into->level = record->level;
        snprintf(into->cell, sizeof into->cell, "%s", record->cell);
        snprintf(into->target, sizeof into->target, "%s", record->target);
        snprintf(into->message, sizeof into->message, "%s", record->message);
        snprintf(into->file, sizeof into->file, "%s", record->file);
        into->line = record->line;
        into->time_unix_ns = record->time_unix_ns;
        into->fields[0] = '\0';
        for (i = 0; i < record->field_count; i++) {
            size_t used = strlen(into->fields);
            snprintf(into->fields + used, sizeof into->fields - used, "%s=%s;", record->fields[i].key,
                     record->fields[i].value);
        }
        pthread_cond_broadcast(&changed);
    }
    pthread_mutex_unlock(&lock);
}

static void count_free(void *userdata) {
    (void)userdata;
    sink_frees++;
}

/* Waits (an event: the sink signals) until `*counter` reaches `want`. */
static int wait_count(const int *counter, int want) {
    struct timespec until;
    int ok = 1;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&lock);
    while (*counter < want && ok) {
        ok = pthread_cond_timedwait(&changed, &lock, &until) == 0;
    }
    ok = *counter >= want;
    pthread_mutex_unlock(&lock);
    return ok;
}

int main(int argc, char **argv) {
    const char *env[] = {"CELLSHM_QUIET=1", NULL};
    cellshm_hub *hub = NULL;
    cellshm_peer *peer = NULL;
    cellshm_peer *victim = NULL;
    cellshm_response *response = NULL;
    struct timespec now;
    uint64_t now_ns;
    int code = 0;

    CHECK(argc == 2);
    CHECK_STATUS(cellshm_hub_new(NULL, 4, &hub), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_set_log_sink(NULL, sink, NULL, NULL), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_hub_set_log_sink(hub, sink, NULL, count_free), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_spawn(hub, "logger", argv[1], NULL, env, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);

    CHECK_STATUS(cellshm_peer_call(peer, "Test.log_fields", (const uint8_t *)"disk almost full", 16, NULL, &response),
                 CELLSHM_OK);
    cellshm_response_free(response);
    CHECK(wait_count(&last_record.count, 1));
    clock_gettime(CLOCK_REALTIME, &now);
    now_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    pthread_mutex_lock(&lock);
    CHECK(strcmp(last_record.cell, "logger") == 0);
    CHECK(last_record.level == 2);
    CHECK(strcmp(last_record.target, "c.cell") == 0);
    CHECK(strcmp(last_record.message, "disk almost full") == 0);
    CHECK(strcmp(last_record.fields, "answer=42;unit=ms;") == 0);
    CHECK(strstr(last_record.file, "test_cell.c") != NULL && last_record.line > 0);
    CHECK(last_record.time_unix_ns <= now_ns && now_ns - last_record.time_unix_ns < 60000000000ull);
    pthread_mutex_unlock(&lock);

    /* What the host measured of those calls, per method. */
    {
        cellshm_method_metrics m;
        char *json = NULL;
        CHECK_STATUS(cellshm_peer_method_metrics(peer, CELLSHM_HOST_TO_CELL, "Test.log_fields", &m), CELLSHM_OK);
        CHECK(m.calls == 1 && m.errors == 0 && m.in_flight == 0);
        CHECK(m.p50_ns > 0 && m.p50_ns <= m.p99_ns && m.p99_ns <= m.max_ns);
        CHECK_STATUS(cellshm_peer_method_metrics(peer, CELLSHM_HOST_TO_CELL, "Never.called", &m), CELLSHM_NOT_FOUND);
        CHECK_STATUS(cellshm_peer_method_metrics(peer, 7, "Test.log_fields", &m), CELLSHM_INVALID_ARGUMENT);
        /* The cell's ready call, served by the host (retried if a first attempt timed out). */
        CHECK_STATUS(cellshm_peer_method_metrics(peer, CELLSHM_CELL_TO_HOST, "cellshm.Lifecycle.ready", &m), CELLSHM_OK);
        CHECK(m.calls >= 1);
        CHECK_STATUS(cellshm_hub_metrics_json(hub, &json), CELLSHM_OK);
        CHECK(strstr(json, "\"name\":\"logger\"") != NULL);
        CHECK(strstr(json, "\"method\":\"Test.log_fields\",") != NULL);
        cellshm_string_free(json);
        cellshm_string_free(NULL);
    }

    /* A notice of the library: a cell lost. */
    CHECK_STATUS(cellshm_hub_spawn(hub, "victim", argv[1], NULL, env, NULL, &victim), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(victim, 10000), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_kill(victim), CELLSHM_OK);
    CHECK(wait_count(&last_notice.count, 1));
    pthread_mutex_lock(&lock);
    CHECK(last_notice.level == 2);
    CHECK(strcmp(last_notice.cell, "victim") == 0);
    CHECK(strstr(last_notice.message, "peer lost") != NULL);
    CHECK(strncmp(last_notice.target, "cellshm", 7) == 0);
    pthread_mutex_unlock(&lock);
    CHECK_STATUS(cellshm_peer_wait_exit(victim, 5000, &code), CELLSHM_OK);
    cellshm_peer_free(victim);

    /* Replaced: the old sink's userdata is released once. */
    CHECK_STATUS(cellshm_hub_set_log_sink(hub, NULL, NULL, NULL), CELLSHM_OK);
    CHECK(sink_frees == 1);
    CHECK_STATUS(cellshm_peer_shutdown(peer, 3000), CELLSHM_OK);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
    printf("test_logs: all checks passed\n");
    return 0;
}
