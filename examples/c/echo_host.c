/* A C host: spawns every program named on its command line as a cell on one hub,
 * calls Echo.echo on each, prints the answers and shuts the cells down.
 *
 *   echo_host ./echo_cell ./target/release/echo-cell
 */
#include <stdio.h>
#include <string.h>

#include "cellshm.h"

#define MAX_CELLS 8

static int report(const char *what) {
    fprintf(stderr, "echo_host: %s: %s\n", what, cellshm_last_error_message());
    return 1;
}

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peers[MAX_CELLS] = {NULL};
    int count = argc - 1;
    int failed = 0;
    int i;
    const char message[] = "hello from the C host";
    cellshm_call_options options = cellshm_call_options_default();
    options.timeout_ms = 2000;

    if (count < 1 || count > MAX_CELLS) {
        fprintf(stderr, "usage: echo_host CELL_PROGRAM...\n");
        return 2;
    }
    if (cellshm_hub_new(NULL, 0, &hub) != CELLSHM_OK) {
        return report("creating the hub");
    }
    printf("hub %s\n", cellshm_hub_name(hub));
    for (i = 0; i < count && !failed; i++) {
        char name[32];
        snprintf(name, sizeof name, "echo-%d", i);
        if (cellshm_hub_spawn(hub, name, argv[i + 1], NULL, NULL, NULL, &peers[i]) != CELLSHM_OK) {
            failed = report("spawning a cell");
        } else if (cellshm_peer_wait_ready(peers[i], 10000) != CELLSHM_OK) {
            failed = report("waiting for a cell");
        } else {
            printf("%s: ready (%s, pid %u)\n", name, argv[i + 1], cellshm_peer_pid(peers[i]));
        }
    }
    for (i = 0; i < count && !failed; i++) {
        cellshm_response *response = NULL;
        if (cellshm_peer_call(peers[i], "Echo.echo", (const uint8_t *)message, strlen(message), &options, &response) != CELLSHM_OK) {
            failed = report("calling Echo.echo");
            break;
        }
        printf("echo-%d: Echo.echo -> \"%.*s\"\n", i, (int)cellshm_response_len(response), (const char *)cellshm_response_data(response));
        cellshm_response_free(response);
    }
    for (i = 0; i < count; i++) {
        int exit_code = -1;
        if (peers[i] == NULL) {
            continue;
        }
        cellshm_peer_shutdown(peers[i], 2000);
        if (cellshm_peer_wait_exit(peers[i], 0, &exit_code) == CELLSHM_OK) {
            printf("echo-%d: exited with code %d\n", i, exit_code);
        }
        cellshm_peer_free(peers[i]);
    }
    cellshm_hub_free(hub);
    return failed;
}
