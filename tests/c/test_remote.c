/* A remote gRPC server as a peer, from C: cellshm_hub_add_remote serves its methods as
 * host methods, and a cell calls one through its host; cellshm_supervisor_add_remote
 * also shows it in the supervisor by its gRPC health. The remote is a real gRPC server:
 * `cellshm-grpc serve` in front of a test cell of its own.
 *   test_remote CELLSHM_GRPC RUST_TEST_CELL */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* Starts `cellshm-grpc serve` with a test cell; writes "http://HOST:PORT" to `url`. */
static pid_t start_remote(const char *grpc, const char *test_cell, char *url, size_t url_len) {
    int out[2];
    CHECK(pipe(out) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execl(grpc, grpc, "serve", "--listen", "127.0.0.1:0", "--", "echo", test_cell, "cell", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *said = fdopen(out[0], "r");
    char line[256];
    CHECK(said != NULL && fgets(line, sizeof line, said) != NULL);
    CHECK(strncmp(line, "listening on ", 13) == 0);
    line[strcspn(line, "\n")] = 0;
    snprintf(url, url_len, "http://%s", line + 13);
    return pid;
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    char url[300];
    pid_t server = start_remote(argv[1], argv[2], url, sizeof url);

    cellshm_hub *hub = NULL;
    CHECK_STATUS(cellshm_hub_new(NULL, 4, &hub), CELLSHM_OK);
    const char *methods[] = {"Echo.echo", "Test.fail", NULL};
    const uint32_t kinds[] = {CELLSHM_METHOD_UNARY, CELLSHM_METHOD_UNARY};
    cellshm_remote *remote = NULL;
    CHECK_STATUS(cellshm_hub_add_remote(hub, "upstream", url, methods, kinds, 0, &remote), CELLSHM_OK);
    CHECK(remote != NULL);

    /* Wrong arguments: a clear error, the out-parameter left alone. */
    cellshm_remote *unset = NULL;
    CHECK_STATUS(cellshm_hub_add_remote(hub, "again", url, methods, kinds, 0, &unset), CELLSHM_ALREADY_EXISTS);
    CHECK_STATUS(cellshm_hub_add_remote(hub, "nobody", "http://127.0.0.1:1", NULL, NULL, 1000, &unset), CELLSHM_UNAVAILABLE);
    const uint32_t bad_kind[] = {7};
    const char *one[] = {"Other.method", NULL};
    CHECK_STATUS(cellshm_hub_add_remote(hub, "bad", url, one, bad_kind, 0, &unset), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_hub_add_remote(NULL, "x", url, NULL, NULL, 0, &unset), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_hub_add_remote(hub, "x", "not a url", one, NULL, 0, &unset), CELLSHM_INVALID_ARGUMENT);
    CHECK(unset == NULL);

    /* A cell calls the host's Echo.echo: host -> gRPC -> the remote's cell, and back. */
    const char *const args[] = {"cell", NULL};
    cellshm_peer *peer = NULL;
    CHECK_STATUS(cellshm_hub_spawn(hub, "caller", argv[2], args, NULL, NULL, &peer), CELLSHM_OK);
    CHECK_STATUS(cellshm_peer_wait_ready(peer, 10000), CELLSHM_OK);
    uint8_t request[64];
    uint32_t timeout_ms = 10000;
    memcpy(request, &timeout_ms, 4);
    memcpy(request + 4, "Echo.echo\0far away", 18);
    cellshm_response *response = NULL;
    CHECK_STATUS(cellshm_peer_call(peer, "Test.call_host_method", request, 22, NULL, &response), CELLSHM_OK);
    CHECK(cellshm_response_len(response) == 8 && memcmp(cellshm_response_data(response), "far away", 8) == 0);
    cellshm_response_free(response);
    /* A status from the remote's cell comes back with its code and message. */
    uint8_t failing[64];
    memcpy(failing, &timeout_ms, 4);
    uint32_t code = CELLSHM_NOT_FOUND;
    memcpy(failing + 4, "Test.fail\0", 10);
    memcpy(failing + 14, &code, 4);
    memcpy(failing + 18, "gone", 4);
    CHECK_STATUS(cellshm_peer_call(peer, "Test.call_host_method", failing, 22, NULL, &response), CELLSHM_NOT_FOUND);
    CHECK(strstr(cellshm_last_error_message(), "gone") != NULL);

    uint64_t calls = 0, failed = 0;
    CHECK_STATUS(cellshm_remote_counters(remote, &calls, &failed), CELLSHM_OK);
    CHECK(calls == 2 && failed == 1);
    CHECK_STATUS(cellshm_remote_counters(remote, NULL, NULL), CELLSHM_OK);
    CHECK_STATUS(cellshm_remote_counters(NULL, &calls, NULL), CELLSHM_INVALID_ARGUMENT);

    /* The relay a gateway in a process of its own uses (the Rust and Python tests drive it). */
    uint32_t me = (uint32_t)geteuid();
    CHECK_STATUS(cellshm_hub_enable_relay(hub, &me, 1), CELLSHM_OK);
    CHECK_STATUS(cellshm_hub_enable_relay(NULL, &me, 1), CELLSHM_INVALID_ARGUMENT);
    CHECK_STATUS(cellshm_hub_enable_relay(hub, NULL, 1), CELLSHM_INVALID_ARGUMENT);

    cellshm_remote_free(remote);
    cellshm_remote_free(NULL);
    CHECK_STATUS(cellshm_peer_shutdown(peer, 5000), CELLSHM_OK);
    cellshm_peer_free(peer);
    cellshm_hub_free(hub);

    /* A supervisor watches the remote by its gRPC health (the gateway serves
     * grpc.health.v1): READY while it serves, UNAVAILABLE once it is gone. */
    cellshm_supervisor *sup = NULL;
    CHECK_STATUS(cellshm_supervisor_new(NULL, 4, &sup), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_add_remote(sup, "upstream", url, methods, kinds, 0, &remote), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "upstream", CELLSHM_CELL_READY, 20000), CELLSHM_OK);
    CHECK_STATUS(cellshm_supervisor_add_remote(sup, "upstream", url, methods, kinds, 0, &unset), CELLSHM_ALREADY_EXISTS);
    CHECK_STATUS(cellshm_supervisor_add_remote(NULL, "x", url, NULL, NULL, 0, &unset), CELLSHM_INVALID_ARGUMENT);
    CHECK(unset == NULL);
    CHECK_STATUS(cellshm_supervisor_stop(sup, "upstream", 0, NULL), CELLSHM_FAILED_PRECONDITION);
    kill(server, SIGTERM);
    int status = 0;
    CHECK(waitpid(server, &status, 0) == server && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_STATUS(cellshm_supervisor_wait_status(sup, "upstream", CELLSHM_CELL_UNAVAILABLE, 20000), CELLSHM_OK);
    uint32_t now = 0;
    CHECK_STATUS(cellshm_supervisor_status(sup, "upstream", &now), CELLSHM_OK);
    CHECK(now == CELLSHM_CELL_UNAVAILABLE);
    CHECK_STATUS(cellshm_supervisor_remove(sup, "upstream", 0), CELLSHM_OK);
    cellshm_remote_free(remote);
    cellshm_supervisor_free(sup);
    puts("test_remote: a cell called a remote gRPC server through its C host");
    return 0;
}
