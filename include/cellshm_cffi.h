/* cellshm_cffi.h: the declarations of cellshm.h as Python's cffi parses them
 * (ffi.cdef(open("cellshm_cffi.h").read()); ffi.dlopen("libcellshm.so.0")).
 * Generated from cellshm.h by ffi/header-gen; do not edit by hand. The documentation
 * is in cellshm.h. */
#define CELLSHM_MAX_SLOT_CLASSES 8
#define CELLSHM_UID_UNKNOWN 4294967295
#define CELLSHM_VERSION_MAJOR 0
#define CELLSHM_VERSION_MINOR 1
#define CELLSHM_VERSION_PATCH 0
#define CELLSHM_HOST_TO_CELL 0
#define CELLSHM_CELL_TO_HOST 1
#define CELLSHM_WAIT_ADAPTIVE 0
#define CELLSHM_WAIT_SPIN 1
#define CELLSHM_WAIT_BLOCK 2
#define CELLSHM_TIMEOUT_FOREVER 18446744073709551615
#define CELLSHM_CELL_STARTING 0
#define CELLSHM_CELL_READY 1
#define CELLSHM_CELL_STOPPING 2
#define CELLSHM_CELL_EXITED 3
#define CELLSHM_CELL_CRASHED 4
#define CELLSHM_CELL_FAILED 5
#define CELLSHM_CELL_REMOVED 6
#define CELLSHM_CELL_UNAVAILABLE 7
#define CELLSHM_TOPIC_BLOCK 0
#define CELLSHM_TOPIC_DROP_OLDEST 1
#define CELLSHM_TOPIC_DROP_NEWEST 2
#define CELLSHM_TOPIC_DISCONNECT_AFTER 3
enum cellshm_status
 {
  CELLSHM_OK = 0,
  CELLSHM_CANCELLED = 1,
  CELLSHM_UNKNOWN = 2,
  CELLSHM_INVALID_ARGUMENT = 3,
  CELLSHM_DEADLINE_EXCEEDED = 4,
  CELLSHM_NOT_FOUND = 5,
  CELLSHM_ALREADY_EXISTS = 6,
  CELLSHM_PERMISSION_DENIED = 7,
  CELLSHM_RESOURCE_EXHAUSTED = 8,
  CELLSHM_FAILED_PRECONDITION = 9,
  CELLSHM_ABORTED = 10,
  CELLSHM_OUT_OF_RANGE = 11,
  CELLSHM_UNIMPLEMENTED = 12,
  CELLSHM_INTERNAL = 13,
  CELLSHM_UNAVAILABLE = 14,
  CELLSHM_DATA_LOSS = 15,
  CELLSHM_UNAUTHENTICATED = 16,
  CELLSHM_PEER_DEAD = 100,
  CELLSHM_SESSION_CLOSED = 101,
  CELLSHM_PAYLOAD_TOO_LARGE = 102,
  CELLSHM_PROTOCOL_ERROR = 103,
  CELLSHM_HUB_FULL = 104,
  CELLSHM_SYSTEM_ERROR = 105,
};
typedef uint32_t cellshm_status;
enum cellshm_peer_state
 {
  CELLSHM_PEER_STATE_STARTING = 0,
  CELLSHM_PEER_STATE_JOINED = 1,
  CELLSHM_PEER_STATE_READY = 2,
  CELLSHM_PEER_STATE_LEAVING = 3,
  CELLSHM_PEER_STATE_DEAD = 4,
};
typedef uint32_t cellshm_peer_state;
enum cellshm_method_kind
 {
  CELLSHM_METHOD_UNARY = 0,
  CELLSHM_METHOD_STREAM = 1,
  CELLSHM_METHOD_SERVER_STREAMING = 2,
  CELLSHM_METHOD_CLIENT_STREAMING = 3,
  CELLSHM_METHOD_BIDI = 4,
};
typedef uint32_t cellshm_method_kind;
typedef struct cellshm_call cellshm_call;
typedef struct cellshm_cell cellshm_cell;
typedef struct cellshm_hub cellshm_hub;
typedef struct cellshm_loan cellshm_loan;
typedef struct cellshm_method_list cellshm_method_list;
typedef struct cellshm_peer cellshm_peer;
typedef struct cellshm_publisher cellshm_publisher;
typedef struct cellshm_remote cellshm_remote;
typedef struct cellshm_reply cellshm_reply;
typedef struct cellshm_response cellshm_response;
typedef struct cellshm_sample cellshm_sample;
typedef struct cellshm_stream cellshm_stream;
typedef struct cellshm_stream_call cellshm_stream_call;
typedef struct cellshm_stream_item cellshm_stream_item;
typedef struct cellshm_subscriber cellshm_subscriber;
typedef struct cellshm_subscription cellshm_subscription;
typedef struct cellshm_supervisor cellshm_supervisor;
typedef struct {
  size_t size;
  uint64_t timeout_ms;
  uint64_t deadline_ns;
} cellshm_call_options;
typedef uint32_t (*cellshm_handler_fn)(void *userdata,
                                       const uint8_t *request,
                                       size_t request_len,
                                       cellshm_reply *reply);
typedef void (*cellshm_free_fn)(void *userdata);
typedef struct {
  uint32_t slot_size;
  uint32_t slot_count;
} cellshm_slot_class;
typedef struct {
  size_t size;
  uint32_t wait;
  uint32_t spin_us;
  uint32_t server_threads;
  int doorbell_fd;
  bool append_join_args;
  uint32_t stderr_tail;
  uint32_t max_streams;
  uint32_t stream_threads;
  uint64_t default_timeout_ms;
  uint32_t stream_window;
} cellshm_peer_options;
typedef struct {
  size_t size;
  uint32_t max_peers;
  uint32_t ring_capacity;
  uint32_t slot_class_count;
  cellshm_slot_class slot_classes[CELLSHM_MAX_SLOT_CLASSES];
  uint64_t shutdown_grace_ms;
  const cellshm_peer_options *peer_defaults;
  const char *socket_path;
} cellshm_hub_options;
typedef struct {
  uint32_t peer_id;
  uint32_t epoch;
  uint32_t pid;
  uint32_t uid;
  const char *name;
  bool attached;
  bool remote;
} cellshm_caller;
typedef bool (*cellshm_access_policy_fn)(void *userdata,
                                         const cellshm_caller *caller,
                                         const char *method);
typedef struct {
  const char *key;
  const char *value;
} cellshm_log_field;
typedef struct {
  const char *cell;
  uint32_t peer_id;
  uint32_t level;
  const char *target;
  const char *message;
  uint64_t time_unix_ns;
  const char *file;
  uint32_t line;
  const cellshm_log_field *fields;
  size_t field_count;
  bool notice;
} cellshm_log_record;
typedef void (*cellshm_log_sink_fn)(void *userdata, const cellshm_log_record *record);
typedef struct {
  uint64_t calls;
  uint64_t errors;
  uint64_t in_flight;
  uint64_t p50_ns;
  uint64_t p99_ns;
  uint64_t max_ns;
} cellshm_method_metrics;
typedef void (*cellshm_death_fn)(void *userdata, uint32_t status, const char *message);
typedef uint32_t (*cellshm_stream_handler_fn)(void *userdata,
                                              const uint8_t *request,
                                              size_t request_len,
                                              cellshm_stream_call *call);
typedef struct {
  size_t size;
  uint32_t max_restarts;
  uint64_t initial_backoff_ms;
  uint64_t max_backoff_ms;
  uint64_t reset_after_ms;
  uint64_t ready_timeout_ms;
  uint64_t heartbeat_interval_ms;
  uint32_t heartbeat_allowed_misses;
  uint64_t default_timeout_ms;
} cellshm_restart_policy;
typedef void (*cellshm_cell_event_fn)(void *userdata,
                                      const char *name,
                                      uint32_t status,
                                      const char *reason);
typedef struct {
  size_t size;
  uint32_t sample_size;
  uint32_t depth;
  uint32_t history;
  uint32_t max_subscribers;
  uint32_t max_borrowed;
} cellshm_topic_options;
typedef struct {
  size_t size;
  uint32_t policy;
  uint32_t disconnect_after;
  uint32_t wait;
  uint32_t spin_us;
} cellshm_subscriber_options;
cellshm_status cellshm_peer_call_start(const cellshm_peer *peer,
                                       const char *method,
                                       const uint8_t *request,
                                       size_t request_len,
                                       const cellshm_call_options *options,
                                       cellshm_call **out_call);
cellshm_status cellshm_cell_call_start(const cellshm_cell *cell,
                                       const char *method,
                                       const uint8_t *request,
                                       size_t request_len,
                                       const cellshm_call_options *options,
                                       cellshm_call **out_call);
cellshm_status cellshm_call_wait(const cellshm_call *call,
                                 uint64_t timeout_ms,
                                 cellshm_response **out_response);
int cellshm_call_is_done(const cellshm_call *call);
cellshm_status cellshm_call_cancel(const cellshm_call *call);
void cellshm_call_free(cellshm_call *call);
cellshm_status cellshm_reply_write(cellshm_reply *reply, const uint8_t *data, size_t len);
cellshm_status cellshm_reply_buffer(cellshm_reply *reply, size_t max_len, uint8_t **out_buffer);
cellshm_status cellshm_reply_set_len(cellshm_reply *reply, size_t len);
cellshm_status cellshm_reply_error_message(cellshm_reply *reply, const char *message);
uint64_t cellshm_reply_deadline_ns(cellshm_reply *reply);
int cellshm_reply_cancelled(cellshm_reply *reply);
cellshm_status cellshm_cell_new(int argc, const char *const *argv, cellshm_cell **out_cell);
cellshm_status cellshm_cell_attach(const char *hub, const char *name, cellshm_cell **out_cell);
cellshm_status cellshm_cell_register(const cellshm_cell *cell,
                                     const char *name,
                                     cellshm_handler_fn handler,
                                     void *userdata,
                                     cellshm_free_fn free_userdata);
cellshm_status cellshm_cell_describe(const cellshm_cell *cell, const uint8_t *set, size_t set_len);
cellshm_status cellshm_cell_serve(const cellshm_cell *cell);
cellshm_status cellshm_cell_run(const cellshm_cell *cell);
cellshm_status cellshm_cell_call(const cellshm_cell *cell,
                                 const char *method,
                                 const uint8_t *request,
                                 size_t request_len,
                                 const cellshm_call_options *options,
                                 cellshm_response **out_response);
cellshm_status cellshm_cell_notify(const cellshm_cell *cell,
                                   const char *method,
                                   const uint8_t *request,
                                   size_t request_len);
uint32_t cellshm_cell_peer_id(const cellshm_cell *cell);
void cellshm_cell_free(cellshm_cell *cell);
cellshm_hub_options cellshm_hub_options_default(void);
cellshm_status cellshm_hub_new_with(const char *name,
                                    const cellshm_hub_options *options,
                                    cellshm_hub **out_hub);
cellshm_status cellshm_hub_new(const char *name, uint32_t max_peers, cellshm_hub **out_hub);
const char *cellshm_hub_name(const cellshm_hub *hub);
cellshm_status cellshm_hub_register(const cellshm_hub *hub,
                                    const char *name,
                                    cellshm_handler_fn handler,
                                    void *userdata,
                                    cellshm_free_fn free_userdata);
cellshm_status cellshm_hub_describe(const cellshm_hub *hub, const uint8_t *set, size_t set_len);
cellshm_status cellshm_hub_spawn(const cellshm_hub *hub,
                                 const char *name,
                                 const char *program,
                                 const char *const *argv,
                                 const char *const *envp,
                                 const cellshm_peer_options *options,
                                 cellshm_peer **out_peer);
void cellshm_hub_free(cellshm_hub *hub);
cellshm_status cellshm_reply_caller(cellshm_reply *reply, cellshm_caller *out_caller);
cellshm_status cellshm_stream_call_caller(cellshm_stream_call *call, cellshm_caller *out_caller);
cellshm_status cellshm_hub_allow(const cellshm_hub *hub,
                                 const char *method,
                                 const char *const *cells);
cellshm_status cellshm_hub_allow_everyone(const cellshm_hub *hub, const char *method);
cellshm_status cellshm_hub_set_access_policy(const cellshm_hub *hub,
                                             cellshm_access_policy_fn policy,
                                             void *userdata,
                                             cellshm_free_fn free_userdata);
uint64_t cellshm_peer_refused_calls(const cellshm_peer *peer);
cellshm_status cellshm_hub_enable_relay(const cellshm_hub *hub, const uint32_t *uids, size_t count);
cellshm_status cellshm_hub_enable_inspect(const cellshm_hub *hub,
                                          const uint32_t *uids,
                                          size_t count);
cellshm_status cellshm_hub_allow_attached(const cellshm_hub *hub,
                                          const char *method,
                                          const uint32_t *uids,
                                          size_t count);
const char *cellshm_version(void);
const char *cellshm_status_str(uint32_t status);
uint32_t cellshm_last_error_code(void);
const char *cellshm_last_error_message(void);
uint32_t cellshm_method_id(const char *name);
uint64_t cellshm_monotonic_now_ns(void);
cellshm_status cellshm_hub_set_log_sink(const cellshm_hub *hub,
                                        cellshm_log_sink_fn sink,
                                        void *userdata,
                                        cellshm_free_fn free_userdata);
cellshm_status cellshm_supervisor_set_log_sink(const cellshm_supervisor *supervisor,
                                               cellshm_log_sink_fn sink,
                                               void *userdata,
                                               cellshm_free_fn free_userdata);
cellshm_status cellshm_cell_log(const cellshm_cell *cell, const char *line);
cellshm_status cellshm_cell_log_event(const cellshm_cell *cell,
                                      uint32_t level,
                                      const char *target,
                                      const char *message);
cellshm_status cellshm_cell_log_fields(const cellshm_cell *cell,
                                       uint32_t level,
                                       const char *target,
                                       const char *message,
                                       const char *file,
                                       uint32_t line,
                                       const cellshm_log_field *fields,
                                       size_t field_count);
uint64_t cellshm_cell_log_dropped(const cellshm_cell *cell);
cellshm_status cellshm_peer_method_metrics(const cellshm_peer *peer,
                                           uint32_t direction,
                                           const char *method,
                                           cellshm_method_metrics *out_metrics);
cellshm_status cellshm_hub_metrics_json(const cellshm_hub *hub, char **out_json);
void cellshm_string_free(char *text);
cellshm_call_options cellshm_call_options_default(void);
cellshm_peer_options cellshm_peer_options_default(void);
cellshm_status cellshm_peer_wait_ready(const cellshm_peer *peer, uint64_t timeout_ms);
cellshm_status cellshm_peer_call(const cellshm_peer *peer,
                                 const char *method,
                                 const uint8_t *request,
                                 size_t request_len,
                                 const cellshm_call_options *options,
                                 cellshm_response **out_response);
cellshm_status cellshm_peer_notify(const cellshm_peer *peer,
                                   const char *method,
                                   const uint8_t *request,
                                   size_t request_len);
cellshm_status cellshm_peer_get_state(const cellshm_peer *peer, cellshm_peer_state *out_state);
uint32_t cellshm_peer_pid(const cellshm_peer *peer);
cellshm_status cellshm_peer_on_death(const cellshm_peer *peer,
                                     cellshm_death_fn callback,
                                     void *userdata,
                                     cellshm_free_fn free_userdata);
cellshm_status cellshm_peer_wait_exit(const cellshm_peer *peer,
                                      uint64_t timeout_ms,
                                      int *out_exit_code);
cellshm_status cellshm_peer_kill(const cellshm_peer *peer);
cellshm_status cellshm_peer_shutdown(const cellshm_peer *peer, uint64_t grace_ms);
void cellshm_peer_free(cellshm_peer *peer);
cellshm_status cellshm_hub_enable_attach(const cellshm_hub *hub,
                                         const uint32_t *uids,
                                         size_t uid_count);
cellshm_status cellshm_hub_find_peer(const cellshm_hub *hub,
                                     const char *name,
                                     cellshm_peer **out_peer);
cellshm_status cellshm_peer_set_log_filter(const cellshm_peer *peer,
                                           const char *filter,
                                           uint64_t timeout_ms);
cellshm_status cellshm_peer_methods(const cellshm_peer *peer,
                                    uint64_t timeout_ms,
                                    cellshm_method_list **out_list);
size_t cellshm_method_list_len(const cellshm_method_list *list);
const char *cellshm_method_list_name(const cellshm_method_list *list, size_t index);
uint32_t cellshm_method_list_id(const cellshm_method_list *list, size_t index);
void cellshm_method_list_free(cellshm_method_list *list);
size_t cellshm_peer_max_payload(const cellshm_peer *peer);
cellshm_status cellshm_hub_add_remote(const cellshm_hub *hub,
                                      const char *name,
                                      const char *url,
                                      const char *const *methods,
                                      const uint32_t *kinds,
                                      uint64_t connect_timeout_ms,
                                      cellshm_remote **out_remote);
cellshm_status cellshm_supervisor_add_remote(const cellshm_supervisor *supervisor,
                                             const char *name,
                                             const char *url,
                                             const char *const *methods,
                                             const uint32_t *kinds,
                                             uint64_t connect_timeout_ms,
                                             cellshm_remote **out_remote);
cellshm_status cellshm_remote_counters(const cellshm_remote *remote,
                                       uint64_t *out_calls,
                                       uint64_t *out_failed);
void cellshm_remote_free(cellshm_remote *remote);
const uint8_t *cellshm_response_data(const cellshm_response *response);
size_t cellshm_response_len(const cellshm_response *response);
void cellshm_response_free(cellshm_response *response);
cellshm_status cellshm_peer_open_stream(const cellshm_peer *peer,
                                        const char *method,
                                        const uint8_t *request,
                                        size_t request_len,
                                        const cellshm_call_options *options,
                                        cellshm_stream **out_stream);
cellshm_status cellshm_cell_open_stream(const cellshm_cell *cell,
                                        const char *method,
                                        const uint8_t *request,
                                        size_t request_len,
                                        const cellshm_call_options *options,
                                        cellshm_stream **out_stream);
cellshm_status cellshm_stream_next(const cellshm_stream *stream, cellshm_stream_item **out_item);
cellshm_status cellshm_stream_send(const cellshm_stream *stream, const uint8_t *data, size_t len);
cellshm_status cellshm_stream_close_send(const cellshm_stream *stream);
cellshm_status cellshm_stream_finish(const cellshm_stream *stream, cellshm_response **out_response);
cellshm_status cellshm_stream_cancel(const cellshm_stream *stream);
void cellshm_stream_free(cellshm_stream *stream);
const uint8_t *cellshm_stream_item_data(const cellshm_stream_item *item);
size_t cellshm_stream_item_len(const cellshm_stream_item *item);
void cellshm_stream_item_free(cellshm_stream_item *item);
cellshm_status cellshm_hub_register_stream(const cellshm_hub *hub,
                                           const char *name,
                                           cellshm_stream_handler_fn handler,
                                           void *userdata,
                                           cellshm_free_fn free_userdata);
cellshm_status cellshm_hub_register_stream_kind(const cellshm_hub *hub,
                                                const char *name,
                                                uint32_t kind,
                                                cellshm_stream_handler_fn handler,
                                                void *userdata,
                                                cellshm_free_fn free_userdata);
cellshm_status cellshm_cell_register_stream(const cellshm_cell *cell,
                                            const char *name,
                                            cellshm_stream_handler_fn handler,
                                            void *userdata,
                                            cellshm_free_fn free_userdata);
cellshm_status cellshm_cell_register_stream_kind(const cellshm_cell *cell,
                                                 const char *name,
                                                 uint32_t kind,
                                                 cellshm_stream_handler_fn handler,
                                                 void *userdata,
                                                 cellshm_free_fn free_userdata);
cellshm_status cellshm_stream_call_send(cellshm_stream_call *call, const uint8_t *data, size_t len);
cellshm_status cellshm_stream_call_next(cellshm_stream_call *call, cellshm_stream_item **out_item);
int cellshm_stream_call_cancelled(cellshm_stream_call *call);
cellshm_status cellshm_stream_call_set_response(cellshm_stream_call *call,
                                                const uint8_t *data,
                                                size_t len);
cellshm_status cellshm_stream_call_error_message(cellshm_stream_call *call, const char *message);
cellshm_restart_policy cellshm_restart_policy_default(void);
void cellshm_subscription_free(cellshm_subscription *subscription);
cellshm_status cellshm_supervisor_new(const char *name,
                                      uint32_t max_peers,
                                      cellshm_supervisor **out_supervisor);
cellshm_status cellshm_supervisor_new_with(const char *name,
                                           const cellshm_hub_options *options,
                                           cellshm_supervisor **out_supervisor);
cellshm_status cellshm_supervisor_on_event(const cellshm_supervisor *supervisor,
                                           cellshm_cell_event_fn callback,
                                           void *userdata,
                                           cellshm_free_fn free_userdata,
                                           cellshm_subscription **out_subscription);
cellshm_status cellshm_supervisor_set_default_timeout(const cellshm_supervisor *supervisor,
                                                      uint64_t timeout_ms);
cellshm_status cellshm_supervisor_add(const cellshm_supervisor *supervisor,
                                      const char *name,
                                      const char *program,
                                      const char *const *argv,
                                      const char *const *envp,
                                      const cellshm_restart_policy *policy);
cellshm_status cellshm_supervisor_update(const cellshm_supervisor *supervisor,
                                         const char *name,
                                         const char *program,
                                         const char *const *argv,
                                         const char *const *envp,
                                         const cellshm_restart_policy *policy,
                                         uint64_t grace_ms);
cellshm_status cellshm_supervisor_start(const cellshm_supervisor *supervisor, const char *name);
cellshm_status cellshm_supervisor_restart(const cellshm_supervisor *supervisor,
                                          const char *name,
                                          uint64_t grace_ms);
cellshm_status cellshm_supervisor_remove(const cellshm_supervisor *supervisor,
                                         const char *name,
                                         uint64_t grace_ms);
cellshm_status cellshm_supervisor_status(const cellshm_supervisor *supervisor,
                                         const char *name,
                                         uint32_t *out_status);
cellshm_status cellshm_supervisor_wait_status(const cellshm_supervisor *supervisor,
                                              const char *name,
                                              uint32_t status,
                                              uint64_t timeout_ms);
uint32_t cellshm_supervisor_pid(const cellshm_supervisor *supervisor, const char *name);
cellshm_status cellshm_supervisor_call(const cellshm_supervisor *supervisor,
                                       const char *cell,
                                       const char *method,
                                       const uint8_t *request,
                                       size_t request_len,
                                       const cellshm_call_options *options,
                                       cellshm_response **out_response);
cellshm_status cellshm_supervisor_stop(const cellshm_supervisor *supervisor,
                                       const char *name,
                                       uint64_t grace_ms,
                                       int *out_exit_code);
void cellshm_supervisor_free(cellshm_supervisor *supervisor);
cellshm_topic_options cellshm_topic_options_default(void);
cellshm_topic_options cellshm_topic_options_last_value(uint32_t sample_size);
cellshm_topic_options cellshm_topic_options_events(void);
cellshm_subscriber_options cellshm_subscriber_options_default(void);
cellshm_status cellshm_hub_publish(const cellshm_hub *hub,
                                   const char *topic,
                                   const cellshm_topic_options *options,
                                   cellshm_publisher **out_publisher);
cellshm_status cellshm_supervisor_publish(const cellshm_supervisor *supervisor,
                                          const char *topic,
                                          const cellshm_topic_options *options,
                                          cellshm_publisher **out_publisher);
cellshm_status cellshm_cell_publish(const cellshm_cell *cell,
                                    const char *topic,
                                    const cellshm_topic_options *options,
                                    cellshm_publisher **out_publisher);
cellshm_status cellshm_hub_subscribe(const cellshm_hub *hub,
                                     const char *topic,
                                     const cellshm_subscriber_options *options,
                                     cellshm_subscriber **out_subscriber);
cellshm_status cellshm_supervisor_subscribe(const cellshm_supervisor *supervisor,
                                            const char *topic,
                                            const cellshm_subscriber_options *options,
                                            cellshm_subscriber **out_subscriber);
cellshm_status cellshm_cell_subscribe(const cellshm_cell *cell,
                                      const char *topic,
                                      const cellshm_subscriber_options *options,
                                      cellshm_subscriber **out_subscriber);
cellshm_status cellshm_publisher_publish(const cellshm_publisher *publisher,
                                         const uint8_t *data,
                                         size_t len,
                                         uint64_t timeout_ms,
                                         uint64_t *out_seq);
cellshm_status cellshm_publisher_loan(const cellshm_publisher *publisher,
                                      uint64_t timeout_ms,
                                      cellshm_loan **out_loan);
cellshm_status cellshm_publisher_wait_subscribers(const cellshm_publisher *publisher,
                                                  size_t count,
                                                  uint64_t timeout_ms);
size_t cellshm_publisher_subscribers(const cellshm_publisher *publisher);
void cellshm_publisher_free(cellshm_publisher *publisher);
uint8_t *cellshm_loan_data(cellshm_loan *loan);
size_t cellshm_loan_capacity(const cellshm_loan *loan);
uint64_t cellshm_loan_seq(const cellshm_loan *loan);
cellshm_status cellshm_loan_publish(cellshm_loan *loan, size_t len, uint64_t *out_seq);
void cellshm_loan_free(cellshm_loan *loan);
cellshm_status cellshm_subscriber_next(const cellshm_subscriber *subscriber,
                                       uint64_t timeout_ms,
                                       cellshm_sample **out_sample);
cellshm_status cellshm_subscriber_latest(const cellshm_subscriber *subscriber,
                                         cellshm_sample **out_sample);
cellshm_status cellshm_subscribers_wait(const cellshm_subscriber *const *subscribers,
                                        size_t count,
                                        uint64_t timeout_ms,
                                        uint8_t *ready,
                                        size_t *out_ready_count);
uint64_t cellshm_subscriber_dropped(const cellshm_subscriber *subscriber);
void cellshm_subscriber_free(cellshm_subscriber *subscriber);
const uint8_t *cellshm_sample_data(const cellshm_sample *sample);
size_t cellshm_sample_len(const cellshm_sample *sample);
uint64_t cellshm_sample_seq(const cellshm_sample *sample);
uint64_t cellshm_sample_missed(const cellshm_sample *sample);
void cellshm_sample_free(cellshm_sample *sample);
