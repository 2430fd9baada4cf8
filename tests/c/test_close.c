/* Freeing a hub with live cells is a normal shutdown: each cell gets GOODBYE, exits 0
 * and prints nothing ("the host is gone" is only for a host that died).
 *   test_close CELL_PROGRAM...   (each is spawned once, its stderr sent to a file) */
#include <stdio.h>
#include <unistd.h>

#include "check.h"

#define MAX_CELLS 8

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peers[MAX_CELLS] = {0};
    char logs[MAX_CELLS][64];
    int count = argc - 1;
    int i;
    CHECK(count >= 1 && count <= MAX_CELLS);
    CHECK_STATUS(cellshm_hub_new(NULL, 0, &hub), CELLSHM_OK);
    for (i = 0; i < count; i++) {
        char name[16];
        char log_env[96];
        /* sh -c 'exec "$@" 2>"$CELL_LOG"' sh PROGRAM: the cell's stderr goes to a file. */
        const char *args[] = {"-c", "exec \"$@\" 2>\"$CELL_LOG\"", "sh", argv[i + 1], NULL};
        const char *env[] = {log_env, NULL};
        snprintf(name, sizeof name, "cell-%d", i);
        snprintf(logs[i], sizeof logs[i], "/tmp/cellshm-test-close-%d-%d.log", (int)getpid(), i);
        snprintf(log_env, sizeof log_env, "CELL_LOG=%s", logs[i]);
        CHECK_STATUS(cellshm_hub_spawn(hub, name, "sh", args, env, NULL, &peers[i]), CELLSHM_OK);
        CHECK_STATUS(cellshm_peer_wait_ready(peers[i], 15000), CELLSHM_OK);
    }
    cellshm_hub_free(hub);
    for (i = 0; i < count; i++) {
        int exit_code = -1;
        FILE *log;
        long printed;
        CHECK_STATUS(cellshm_peer_wait_exit(peers[i], 5000, &exit_code), CELLSHM_OK);
        log = fopen(logs[i], "r");
        CHECK(log != NULL);
        fseek(log, 0, SEEK_END);
        printed = ftell(log);
        fclose(log);
        if (exit_code != 0 || printed != 0) {
            fprintf(stderr, "%s: exit code %d, %ld bytes on stderr (see %s)\n", argv[i + 1], exit_code, printed, logs[i]);
            return 1;
        }
        remove(logs[i]);
        cellshm_peer_free(peers[i]);
    }
    printf("test_close: %d cells exited 0 and printed nothing\n", count);
    return 0;
}
