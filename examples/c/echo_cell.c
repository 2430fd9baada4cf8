/* A C cell serving Echo.echo and Echo.reverse. Started by a host, which passes it a
 * bootstrap socket (CELLSHM_DOORBELL_FD) on which it asks for its link. */
#include <stdio.h>
#include <string.h>

#include "cellshm.h"

/* The reply is written in place, straight into shared memory. */
static uint32_t echo(void *userdata, const uint8_t *request, size_t request_len, cellshm_reply *reply) {
    uint8_t *buffer = NULL;
    cellshm_status status = cellshm_reply_buffer(reply, request_len, &buffer);
    (void)userdata;
    if (status != CELLSHM_OK) {
        return status;
    }
    if (request_len > 0) {
        memcpy(buffer, request, request_len);
    }
    return CELLSHM_OK;
}

static uint32_t reverse(void *userdata, const uint8_t *request, size_t request_len, cellshm_reply *reply) {
    uint8_t *buffer = NULL;
    size_t i;
    cellshm_status status = cellshm_reply_buffer(reply, request_len, &buffer);
    (void)userdata;
    if (status != CELLSHM_OK) {
        return status;
    }
    for (i = 0; i < request_len; i++) {
        buffer[i] = request[request_len - 1 - i];
    }
    return CELLSHM_OK;
}

int main(int argc, char **argv) {
    cellshm_cell *cell = NULL;
    cellshm_status status = cellshm_cell_new(argc, (const char *const *)argv, &cell);
    if (status != CELLSHM_OK) {
        fprintf(stderr, "echo_cell: %s\n", cellshm_last_error_message());
        return 2;
    }
    if (cellshm_cell_register(cell, "Echo.echo", echo, NULL, NULL) != CELLSHM_OK ||
        cellshm_cell_register(cell, "Echo.reverse", reverse, NULL, NULL) != CELLSHM_OK) {
        fprintf(stderr, "echo_cell: %s\n", cellshm_last_error_message());
        cellshm_cell_free(cell);
        return 2;
    }
    /* Serves until the host says goodbye. */
    status = cellshm_cell_run(cell);
    if (status != CELLSHM_OK) {
        fprintf(stderr, "echo_cell: %s\n", cellshm_last_error_message());
    }
    cellshm_cell_free(cell);
    return status == CELLSHM_OK ? 0 : 1;
}
