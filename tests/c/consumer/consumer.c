/* A program built outside the cellshm tree against an installed cellshm: it hosts
 * itself as a cell (started with CELLSHM_DOORBELL_FD set, it is the cell) and checks one call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cellshm.h>

static uint32_t echo(void *userdata, const uint8_t *request, size_t len, cellshm_reply *reply) {
    (void)userdata;
    return cellshm_reply_write(reply, request, len);
}

static int cell_main(int argc, char **argv) {
    cellshm_cell *cell = NULL;
    cellshm_status status;
    if (cellshm_cell_new(argc, (const char *const *)argv, &cell) != CELLSHM_OK ||
        cellshm_cell_register(cell, "Echo.echo", echo, NULL, NULL) != CELLSHM_OK) {
        fprintf(stderr, "consumer cell: %s\n", cellshm_last_error_message());
        return 1;
    }
    status = cellshm_cell_run(cell);
    cellshm_cell_free(cell);
    return status == CELLSHM_OK ? 0 : 1;
}

int main(int argc, char **argv) {
    cellshm_hub *hub = NULL;
    cellshm_peer *peer = NULL;
    cellshm_response *response = NULL;
    char built_with[32];
    int ok;
    if (getenv("CELLSHM_DOORBELL_FD") != NULL) {
        return cell_main(argc, argv);
    }
    /* The library it runs against is the release whose header it was compiled with. */
    snprintf(built_with, sizeof built_with, "%d.%d.%d", CELLSHM_VERSION_MAJOR, CELLSHM_VERSION_MINOR,
             CELLSHM_VERSION_PATCH);
    if (strcmp(built_with, cellshm_version()) != 0) {
        fprintf(stderr, "consumer: built with cellshm %s, runs against %s\n", built_with, cellshm_version());
        return 1;
    }
    if (cellshm_hub_new(NULL, 0, &hub) != CELLSHM_OK ||
        cellshm_hub_spawn(hub, "self", "/proc/self/exe", NULL, NULL, NULL, &peer) != CELLSHM_OK ||
        cellshm_peer_wait_ready(peer, 10000) != CELLSHM_OK ||
        cellshm_peer_call(peer, "Echo.echo", (const uint8_t *)"out of tree", 11, NULL, &response) != CELLSHM_OK) {
        fprintf(stderr, "consumer: %s\n", cellshm_last_error_message());
        return 1;
    }
    ok = cellshm_response_len(response) == 11 && memcmp(cellshm_response_data(response), "out of tree", 11) == 0;
    cellshm_response_free(response);
    cellshm_peer_shutdown(peer, 2000);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
    printf("consumer (cellshm %s): %s\n", cellshm_version(), ok ? "ok" : "WRONG ANSWER");
    return ok ? 0 : 1;
}
