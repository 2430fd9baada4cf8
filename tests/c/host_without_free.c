/* A C host that exits without cleaning up: it creates a hub (attach enabled), spawns the
 * cell given as argv[1], waits until it is ready, prints "cell_pid=N" and returns from
 * main without cellshm_peer_free or cellshm_hub_free. The pytest around it checks that
 * nothing of the hub is left anywhere and that the cell exits within a second. */
#include <stdio.h>

#include <cellshm.h>

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peer = NULL;
    if (argc < 2) {
        fprintf(stderr, "usage: host_without_free CELL\n");
        return 2;
    }
    if (cellshm_hub_new(argc > 2 ? argv[2] : NULL, 0, &hub) != CELLSHM_OK ||
        cellshm_hub_enable_attach(hub, NULL, 0) != CELLSHM_OK ||
        cellshm_hub_spawn(hub, "cell", argv[1], NULL, NULL, NULL, &peer) != CELLSHM_OK ||
        cellshm_peer_wait_ready(peer, 10000) != CELLSHM_OK) {
        fprintf(stderr, "host_without_free: %s\n", cellshm_last_error_message());
        return 1;
    }
    printf("cell_pid=%u\n", cellshm_peer_pid(peer));
    fflush(stdout);
    return 0; /* no cellshm_*_free: the process ending must be enough */
}
