/* A C cell describes its services with the descriptors cellshm-codegen embedded in its
 * generated header (kv.cellshm.h, compiled here as C99 with every warning an error),
 * and its host reads them back through cellshm.Introspect.descriptors: what a gRPC
 * gateway's reflection serves.
 *   test_descriptors         (host: spawns itself as the cell)
 *   test_descriptors cell    (the cell) */
#include "check.h"
#include "kv.cellshm.h"

static int run_cell(int argc, char **argv) {
    cellshm_cell *cell = NULL;
    CHECK_STATUS(cellshm_cell_new(argc, (const char *const *)argv, &cell), CELLSHM_OK);
    CHECK_STATUS(cellshm_cell_describe(cell, KV_FILE_DESCRIPTOR_SET, KV_FILE_DESCRIPTOR_SET_SIZE), CELLSHM_OK);
    /* Given twice, kept once; a NULL set with a length is refused and changes nothing. */
    CHECK_STATUS(cellshm_cell_describe(cell, KV_FILE_DESCRIPTOR_SET, KV_FILE_DESCRIPTOR_SET_SIZE), CELLSHM_OK);
    CHECK_STATUS(cellshm_cell_describe(cell, NULL, 5), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_cell_describe(NULL, KV_FILE_DESCRIPTOR_SET, KV_FILE_DESCRIPTOR_SET_SIZE), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_cell_serve(cell), CELLSHM_OK);
    CHECK_STATUS(cellshm_cell_run(cell), CELLSHM_OK);
    cellshm_cell_free(cell);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "cell") == 0) {
        return run_cell(argc, argv);
    }
    CHECK(KV_STORE_GET_ID == cellshm_method_id(KV_STORE_GET_NAME));
    cellshm_hub *hub = NULL;
    CHECK_STATUS(cellshm_hub_new(NULL, 4, &hub), CELLSHM_OK);
    const char *const args[] = {"cell", NULL};
    cellshm_peer *peer = NULL;
    CHECK_STATUS(cellshm_hub_spawn(hub, "described", argv[0], args, NULL, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);
    cellshm_response *response = NULL;
    CHECK_STATUS(cellshm_peer_call(peer, "cellshm.Introspect.descriptors", NULL, 0, NULL, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == KV_FILE_DESCRIPTOR_SET_SIZE);
    CHECK(memcmp(cellshm_response_data(response), KV_FILE_DESCRIPTOR_SET, KV_FILE_DESCRIPTOR_SET_SIZE) == 0);
    cellshm_response_free(response);
    /* A host describes what it serves to its cells the same way. */
    CHECK_STATUS(cellshm_hub_describe(hub, KV_FILE_DESCRIPTOR_SET, KV_FILE_DESCRIPTOR_SET_SIZE), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_describe(hub, NULL, 1), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_peer_shutdown(peer, 5000), CELLSHM_OK);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);
    puts("test_descriptors: the C cell's generated descriptors reached its host");
    return 0;
}
