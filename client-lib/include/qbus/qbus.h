/* libqbus: the C API of the qbus broker's client library (beside the C++ API of
 * <qbus/client.hpp>, in the same libqbus.so, on the same client core).
 *
 *   qbus_client* c = NULL;
 *   if (qbus_client_connect(NULL, &c) != QBUS_OK) { puts(qbus_last_error()); return 1; }
 *   qbus_send(c, "jobs", "hello", 5, NULL);
 *   qbus_message* m = NULL;
 *   if (qbus_receive(c, "jobs", 1000, 0, &m) == QBUS_OK && m != NULL) {
 *     const void* data; size_t len;
 *     qbus_message_payload(m, &data, &len);
 *     qbus_message_free(m);
 *   }
 *   qbus_client_free(c);
 *
 * Semantics are those of the C++ API (docs/client.md, proto/PROTOCOL.md); this header says
 * what differs.
 *
 * Errors. Every function returns an int: QBUS_OK (0) or one of the QBUS_E_ codes below,
 * which are the values of qbus::Errc. No exception and no C++ type crosses this boundary.
 * qbus_strerror(code) names a code; qbus_last_error() is the text of the calling thread's
 * latest failure (it names the argument or the broker's reason), and
 * qbus_client_last_error() that of a client's latest failure. A receive that times out is
 * not a failure: it returns QBUS_OK and a NULL message. After QBUS_E_CONNECTION_CLOSED,
 * QBUS_E_PROTOCOL_VIOLATION or QBUS_E_IO_ERROR the client is unusable; free it and
 * connect again.
 *
 * Handles. qbus_client, qbus_message, qbus_region, qbus_shared_region and
 * qbus_subscription are opaque. Whoever a function gives a handle to (an out parameter)
 * owns it and frees it with its _free function; _free of NULL does nothing. A NULL handle,
 * a NULL required out parameter, a NULL buffer with a non-zero length, and a handle that
 * was already freed are QBUS_E_INVALID_ARGUMENT, not a crash: the library tracks its live
 * handles (a freed handle is recognised until its address is reused by a new handle of
 * the same kind, which no check can tell apart).
 *
 * Thread-safety. A qbus_client is not thread-safe: call it (and the subscriptions and
 * regions it made, whose _free may talk to the broker: a subscription's cancels it) from
 * one thread at a time. Separate clients are independent. A qbus_message is an immutable
 * value: read and free it on any thread, also after its client is freed. qbus_strerror
 * and qbus_last_error may be called from any thread.
 *
 * Event loops. Calls block the calling thread until the broker answers (a send only until
 * its bytes are written). To drive a client from glib, libuv or epoll: watch
 * qbus_client_fd() for readability (and writability while qbus_client_wants_write() says
 * so), call qbus_client_process() when it is ready, which never blocks, then take what
 * arrived with qbus_subscription_next(sub, 0, &m) until it gives NULL. Deliveries that any
 * other call happened to read are kept for their subscription too and do not make the fd
 * readable again: drain the subscriptions after every call, not only after readiness.
 *
 * Options structs are extensible: initialise each with its _init function before setting
 * fields, or pass NULL for the defaults. _init is inline: it passes this header's size of
 * the struct to the library's _init_size, which zeroes that many bytes, sets the defaults
 * and records the size in struct_size. A later libqbus that has added fields reads only
 * the first struct_size bytes (the rest take their defaults), so a program built against
 * this header keeps working with it. Strings are NUL-terminated UTF-8; a NULL string
 * field means "not set". */
#ifndef QBUS_QBUS_H
#define QBUS_QBUS_H

#include <stddef.h>
#include <stdint.h>

#ifndef QBUS_API
#define QBUS_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Error codes (the values of qbus::Errc, proto/PROTOCOL.md section 12) ---- */
enum {
  QBUS_OK = 0,
  QBUS_E_BAD_MAGIC = 1,
  QBUS_E_UNSUPPORTED_VERSION = 2,
  QBUS_E_FRAME_TOO_LARGE = 3,
  QBUS_E_MALFORMED_HEADER = 4,
  QBUS_E_MALFORMED_FRAME = 10,
  QBUS_E_UNKNOWN_FRAME_TYPE = 11,
  QBUS_E_HANDSHAKE_REQUIRED = 12,
  QBUS_E_HANDSHAKE_TIMEOUT = 13,
  QBUS_E_UNEXPECTED_FRAME = 14,
  QBUS_E_INVALID_KEY = 20,
  QBUS_E_PAYLOAD_TOO_LARGE = 21,
  QBUS_E_QUEUE_FULL = 22,
  QBUS_E_TIMEOUT = 23,
  QBUS_E_QUOTA_EXCEEDED = 24,
  QBUS_E_TOO_MANY_RECEIVES = 25,
  QBUS_E_QUEUE_CONFLICT = 26,
  QBUS_E_TOO_MANY_QUEUES = 27,
  QBUS_E_TOO_MANY_CONNECTIONS = 28,
  QBUS_E_QUEUE_DELETED = 29,
  QBUS_E_NO_SUCH_PEER = 30,
  QBUS_E_PEER_BUSY = 31,
  QBUS_E_REPLY_EXPIRED = 32,
  QBUS_E_NOT_INBOX_OWNER = 33,
  QBUS_E_AUTH_FAILED = 34,
  QBUS_E_TOO_MANY_REQUESTS = 35,
  QBUS_E_NO_SUCH_REGION = 36,
  QBUS_E_PERMISSION_DENIED = 37,
  QBUS_E_DISCONNECTED_BY_OPERATOR = 38,
  QBUS_E_NO_SUCH_QUEUE = 39,
  QBUS_E_UNKNOWN_DELIVERY = 40,
  QBUS_E_DELIVERY_TIMED_OUT = 41,
  QBUS_E_TOO_MANY_UNACKED = 42,
  QBUS_E_NO_SUCH_SUBSCRIPTION = 43,
  QBUS_E_SINGLE_ACTIVE_CONSUMER = 44,
  QBUS_E_STORAGE_FAILED = 45,
  QBUS_E_INVALID_SUBJECT = 46,
  QBUS_E_TOO_MANY_SUBSCRIPTIONS = 47,
  QBUS_E_SLOW_SUBSCRIBER = 48,
  QBUS_E_INTERNAL_ERROR = 50,
  QBUS_E_SHUTTING_DOWN = 51,
  QBUS_E_CONNECT_FAILED = 200,
  QBUS_E_CONNECTION_CLOSED = 201,
  QBUS_E_PROTOCOL_VIOLATION = 202,
  QBUS_E_INVALID_ARGUMENT = 203,
  QBUS_E_IO_ERROR = 204,
  QBUS_E_BAD_ADDRESS = 205,
  QBUS_E_OUT_OF_MEMORY = 206
};

/* Waits without limit (receive, request and next timeouts). */
#define QBUS_FOREVER (-1)

/* The stable snake_case name of a code ("queue_full"); "unknown" for other values. A
 * static string: never free it. */
QBUS_API const char* qbus_strerror(int code);
/* The text of the calling thread's latest failed call ("" when none failed yet). Valid
 * until that thread's next failed call. */
QBUS_API const char* qbus_last_error(void);

/* ---- Opaque handles ---- */
typedef struct qbus_client qbus_client;
typedef struct qbus_message qbus_message;
typedef struct qbus_region qbus_region;
typedef struct qbus_shared_region qbus_shared_region;
typedef struct qbus_subscription qbus_subscription;

/* A message header: `key` is NUL-terminated; `value` is `value_len` bytes. */
typedef struct qbus_header {
  const char* key;
  const void* value;
  size_t value_len;
} qbus_header;

/* ---- Connecting ---- */
typedef struct qbus_client_options {
  size_t struct_size;
  /* "unix:/path", "tcp:HOST:PORT" or "tls:HOST:PORT"; NULL: $QBUS_ADDRESS, else the
   * per-user socket when it exists, else /run/qbus/qbus.sock. */
  const char* address;
  const char* name;           /* shown in `qbusctl clients`; at most 64 bytes */
  int64_t connect_timeout_ms; /* default 5000 */
  const char* token;          /* TCP: the broker's token; NULL: $QBUS_TOKEN / $QBUS_TOKEN_FILE */
  const char* tls_ca;         /* PEM files, tls: addresses only (ClientOptions' rules) */
  const char* tls_cert;
  const char* tls_key;
  /* Payloads larger than this travel through a shared-memory region (Unix sockets).
   * Default 65536; SIZE_MAX keeps everything it can inline. */
  size_t region_threshold;
  /* Added after QBUS_0 (read only when struct_size covers it): bytes of regions kept
   * granted and populated ahead of need, ClientOptions::region_pool_bytes. Default 0. */
  size_t region_pool_bytes;
} qbus_client_options;
QBUS_API int qbus_client_options_init_size(qbus_client_options* options, size_t size);
static inline int qbus_client_options_init(qbus_client_options* options) {
  return qbus_client_options_init_size(options, sizeof *options);
}

/* Connects and completes the handshake. `options` NULL: the defaults. On success *client
 * is a new handle the caller owns; on failure it is NULL and qbus_last_error() says why. */
QBUS_API int qbus_client_connect(const qbus_client_options* options, qbus_client** client);
/* Writes what a batch left buffered (best effort) and closes the connection. Messages the
 * client received stay valid; its regions, shared regions and subscriptions must be freed
 * too (they then only free their memory). */
QBUS_API void qbus_client_free(qbus_client* client);
/* The text of this client's latest failure ("" when none); valid until its next failure
 * or its free. NULL for a NULL or freed client. */
QBUS_API const char* qbus_client_last_error(const qbus_client* client);

typedef struct qbus_session_info {
  uint32_t pid; /* this process as the broker sees it */
  uint32_t uid;
  uint32_t gid;
  uint64_t client_id;
  uint32_t max_payload; /* largest inline payload of one message */
  uint8_t protocol_version;
} qbus_session_info;
QBUS_API int qbus_client_session(const qbus_client* client, qbus_session_info* info);

/* ---- Event-loop integration (see the top of this header) ---- */
/* The connection's socket: poll it for readability. Owned by the client: never close it. */
QBUS_API int qbus_client_fd(const qbus_client* client, int* fd);
/* *wants_write is 1 while buffered output waits for the socket (then poll for
 * writability as well), else 0. */
QBUS_API int qbus_client_wants_write(const qbus_client* client, int* wants_write);
/* Never blocks: writes what the socket takes, reads what has arrived and files each
 * delivery with its subscription. */
QBUS_API int qbus_client_process(qbus_client* client);

/* ---- Queues ---- */
typedef struct qbus_send_options {
  size_t struct_size;
  const qbus_header* headers;
  size_t header_count;
  int confirm;      /* wait for the broker's verdict and return its refusal */
  int64_t ttl_ms;   /* 0: the queue's default */
  int64_t delay_ms; /* 0: deliverable at once */
  uint8_t priority; /* 0-9, higher first */
} qbus_send_options;
QBUS_API int qbus_send_options_init_size(qbus_send_options* options, size_t size);
static inline int qbus_send_options_init(qbus_send_options* options) {
  return qbus_send_options_init_size(options, sizeof *options);
}

/* Queues `len` bytes under `key`. Pipelined unless options->confirm: a refusal the broker
 * reports later is counted in qbus_send_failures(). */
QBUS_API int qbus_send(qbus_client* client, const char* key, const void* data, size_t len,
                       const qbus_send_options* options);

enum { QBUS_RECEIVE_ACK = 1 }; /* qbus_receive flags: acknowledgement mode */

/* Takes the oldest message of `key`, waiting up to `timeout_ms` (0: do not wait;
 * QBUS_FOREVER). *message is a new handle, or NULL when the timeout passed. */
QBUS_API int qbus_receive(qbus_client* client, const char* key, int64_t timeout_ms, int flags,
                          qbus_message** message);
/* Up to `max` messages in one round trip into messages[0..*count); each is the caller's.
 * *count is 0 when the timeout passed. */
QBUS_API int qbus_receive_batch(qbus_client* client, const char* key, size_t max,
                                int64_t timeout_ms, int flags, qbus_message** messages,
                                size_t* count);

/* Overflow policies and fsync modes of qbus_queue_options (QueueOptions). */
enum {
  QBUS_OVERFLOW_DEFAULT = 0,
  QBUS_OVERFLOW_REJECT = 1,
  QBUS_OVERFLOW_DROP_OLDEST = 2,
  QBUS_OVERFLOW_BLOCK = 3
};
enum { QBUS_FSYNC_DEFAULT = 0, QBUS_FSYNC_ALWAYS = 1, QBUS_FSYNC_BATCH = 2, QBUS_FSYNC_NONE = 3 };

/* Zero fields take the broker's defaults, as QueueOptions'. */
typedef struct qbus_queue_options {
  size_t struct_size;
  uint32_t max_messages;
  uint64_t max_bytes;
  int overflow;
  int64_t ack_timeout_ms;
  uint16_t max_deliveries;
  const char* dead_letter;
  int dead_letter_overflow;
  int64_t ttl_ms;
  uint8_t priorities;
  int dead_letter_expired;
  int single_active_consumer;
  int durable;
  int fsync;
  /* Added after QBUS_0 (read only when struct_size covers it; an int64_t, so that it starts
   * past the older struct's end rather than in its padding). Nonzero: every message gets a
   * broker-unique "qbus-id" header (QueueOptions::message_ids). */
  int64_t message_ids;
} qbus_queue_options;
QBUS_API int qbus_queue_options_init_size(qbus_queue_options* options, size_t size);
static inline int qbus_queue_options_init(qbus_queue_options* options) {
  return qbus_queue_options_init_size(options, sizeof *options);
}

/* Creates the queue or checks it (QBUS_E_QUEUE_CONFLICT when declared with other options). */
QBUS_API int qbus_declare(qbus_client* client, const char* key, const qbus_queue_options* options);
/* Drops every queued message (*dropped: how many; may be NULL); delete also removes the
 * queue. */
QBUS_API int qbus_purge(qbus_client* client, const char* key, uint64_t* dropped);
QBUS_API int qbus_delete_queue(qbus_client* client, const char* key, uint64_t* dropped);

/* Waits until the broker has processed everything sent before. */
QBUS_API int qbus_sync(qbus_client* client);
/* Failures of pipelined sends so far: their number, the latest code and its text (valid
 * until the client's next call). Any out parameter may be NULL. */
QBUS_API int qbus_send_failures(const qbus_client* client, uint64_t* count, int* last_code,
                                const char** last_text);
/* Between begin and end, sends are buffered and written in large chunks. Batches nest;
 * the last end writes what is left. */
QBUS_API int qbus_batch_begin(qbus_client* client);
QBUS_API int qbus_batch_end(qbus_client* client);

/* ---- Acknowledgements (messages received with QBUS_RECEIVE_ACK or a subscription) ---- */
enum { QBUS_NACK_REQUEUE = 1, QBUS_NACK_REQUEUE_AFTER = 2, QBUS_NACK_DEAD_LETTER = 3 };
QBUS_API int qbus_ack(qbus_client* client, const qbus_message* message, int confirm);
QBUS_API int qbus_ack_up_to(qbus_client* client, uint64_t delivery_tag, int confirm);
QBUS_API int qbus_nack(qbus_client* client, const qbus_message* message, int action,
                       int64_t delay_ms, int confirm);
QBUS_API int qbus_extend(qbus_client* client, const qbus_message* message, int64_t by_ms,
                         int confirm);

/* ---- Direct messages and requests ---- */
typedef struct qbus_direct_options {
  size_t struct_size;
  int64_t wait_ms; /* wait this long for the peer to connect; 0: fail at once */
  int confirm;     /* default 1: wait for the verdict */
  const qbus_header* headers;
  size_t header_count;
} qbus_direct_options;
QBUS_API int qbus_direct_options_init_size(qbus_direct_options* options, size_t size);
static inline int qbus_direct_options_init(qbus_direct_options* options) {
  return qbus_direct_options_init_size(options, sizeof *options);
}

QBUS_API int qbus_send_to_pid(qbus_client* client, uint32_t pid, const void* data, size_t len,
                              const qbus_direct_options* options);
QBUS_API int qbus_send_to_client(qbus_client* client, uint64_t client_id, const void* data,
                                 size_t len, const qbus_direct_options* options);
/* Takes a direct message sent to this process; *message NULL when the timeout passed. */
QBUS_API int qbus_receive_direct(qbus_client* client, int64_t timeout_ms, qbus_message** message);
/* Up to `max` direct messages in one round trip, as qbus_receive_batch. */
QBUS_API int qbus_receive_direct_batch(qbus_client* client, size_t max, int64_t timeout_ms,
                                       qbus_message** messages, size_t* count);

/* Sends a request to queue `key` and waits for the reply: *reply is a new handle, or NULL
 * when none came within `timeout_ms`. `headers` may be NULL (header_count 0). */
QBUS_API int qbus_request(qbus_client* client, const char* key, const void* data, size_t len,
                          int64_t timeout_ms, const qbus_header* headers, size_t header_count,
                          qbus_message** reply);
/* Answers a message whose qbus_message_info says is_request. Pipelined. */
QBUS_API int qbus_reply(qbus_client* client, const qbus_message* request, const void* data,
                        size_t len);

/* ---- Messages ---- */
typedef struct qbus_message_info {
  size_t struct_size;  /* set by qbus_message_info_init */
  uint32_t sender_pid; /* as the kernel reported it to the broker */
  uint32_t sender_uid;
  uint64_t sender_client_id;
  uint64_t request_id; /* non-zero: a request, answer it with qbus_reply */
  int is_request;
  int is_direct;
  int in_shared_memory;  /* the payload is a read-only mapping of a region */
  uint64_t delivery_tag; /* acknowledgement mode; 0: nothing to settle */
  uint32_t delivery_count;
  int redelivered;
  uint64_t dropped_before; /* subject deliveries: messages dropped before this one */
  int retained;
  size_t header_count;
  /* The key and the payload, as qbus_message_key and qbus_message_payload give them (valid
   * while the message lives): one call reads a whole message. */
  const char* key;
  const void* payload;
  size_t payload_len;
} qbus_message_info;
QBUS_API int qbus_message_info_init_size(qbus_message_info* info, size_t size);
static inline int qbus_message_info_init(qbus_message_info* info) {
  return qbus_message_info_init_size(info, sizeof *info);
}

/* The queue key (a subject delivery's subject; "" for a direct message or a reply):
 * NUL-terminated, valid while the message lives. */
QBUS_API int qbus_message_key(const qbus_message* message, const char** key);
/* The payload bytes, valid while the message lives (for a region message: the mapping). */
QBUS_API int qbus_message_payload(const qbus_message* message, const void** data, size_t* len);
QBUS_API int qbus_message_info_get(const qbus_message* message, qbus_message_info* info);
/* Header `index` (0 <= index < header_count), in the order sent. */
QBUS_API int qbus_message_header_at(const qbus_message* message, size_t index, qbus_header* header);
/* The first header named `name`: *value NULL when there is none. */
QBUS_API int qbus_message_header(const qbus_message* message, const char* name, const void** value,
                                 size_t* value_len);
/* A region message's mapping goes, and the region is released with the client's next
 * call. Any thread. */
QBUS_API void qbus_message_free(qbus_message* message);

/* ---- Subscriptions (queue subscriptions and publish/subscribe subjects) ---- */
typedef struct qbus_subscribe_options {
  size_t struct_size;
  uint32_t prefetch; /* ack mode: at most this many unsettled; 0: the broker's default */
  int ack;           /* default 1 */
} qbus_subscribe_options;
QBUS_API int qbus_subscribe_options_init_size(qbus_subscribe_options* options, size_t size);
static inline int qbus_subscribe_options_init(qbus_subscribe_options* options) {
  return qbus_subscribe_options_init_size(options, sizeof *options);
}

enum {
  QBUS_SLOW_DEFAULT = 0,
  QBUS_SLOW_DROP_OLDEST = 1,
  QBUS_SLOW_DISCONNECT = 2,
  QBUS_SLOW_BLOCK = 3
};
typedef struct qbus_subject_options {
  size_t struct_size;
  const char* group; /* queue group; NULL: none */
  uint32_t max_messages;
  uint64_t max_bytes;
  int slow;
} qbus_subject_options;
QBUS_API int qbus_subject_options_init_size(qbus_subject_options* options, size_t size);
static inline int qbus_subject_options_init(qbus_subject_options* options) {
  return qbus_subject_options_init_size(options, sizeof *options);
}

/* The broker pushes the messages of queue `key`. *subscription is the caller's to free
 * (which cancels it, best effort); freed after its client, it only frees its memory. */
QBUS_API int qbus_subscribe(qbus_client* client, const char* key,
                            const qbus_subscribe_options* options,
                            qbus_subscription** subscription);
/* Every subject `pattern` matches ("a.*.c", "a.>"); returns once the broker answered. */
QBUS_API int qbus_subscribe_subject(qbus_client* client, const char* pattern,
                                    const qbus_subject_options* options,
                                    qbus_subscription** subscription);
/* The next delivery, waiting up to `timeout_ms` (0: only what has arrived): *message a
 * new handle, or NULL. An error that ended the subscription is returned once what came
 * before it was handed out. */
QBUS_API int qbus_subscription_next(qbus_subscription* subscription, int64_t timeout_ms,
                                    qbus_message** message);
/* Deliveries already read and kept for next(), without reading the socket. */
QBUS_API int qbus_subscription_pending(const qbus_subscription* subscription, size_t* count);
/* *active: subscribed, not cancelled nor ended by an error. */
QBUS_API int qbus_subscription_active(const qbus_subscription* subscription, int* active);
QBUS_API int qbus_subscription_cancel(qbus_subscription* subscription);
QBUS_API void qbus_subscription_free(qbus_subscription* subscription);

typedef struct qbus_publish_options {
  size_t struct_size;
  const qbus_header* headers;
  size_t header_count;
  int retain;
  int confirm;
} qbus_publish_options;
QBUS_API int qbus_publish_options_init_size(qbus_publish_options* options, size_t size);
static inline int qbus_publish_options_init(qbus_publish_options* options) {
  return qbus_publish_options_init_size(options, sizeof *options);
}
QBUS_API int qbus_publish(qbus_client* client, const char* subject, const void* data, size_t len,
                          const qbus_publish_options* options);

/* ---- Shared-memory regions (Unix sockets) ---- */
/* A writable region of `size` bytes (Region in the C++ API): fill it, then send it. */
QBUS_API int qbus_region_allocate(qbus_client* client, size_t size, qbus_region** region);
/* The writable bytes: NULL and 0 once the region was sent. Sending it unmaps them, so a
 * pointer taken before a send must not be used after it. */
QBUS_API int qbus_region_data(qbus_region* region, void** data, size_t* size);
/* *id the broker's id (0 once given up by a whole send); *sealed 1 once sent. Either may
 * be NULL. */
QBUS_API int qbus_region_info(const qbus_region* region, uint64_t* id, int* sealed);
/* Sends the whole region and gives it up: the handle stays the caller's to free, empty. */
QBUS_API int qbus_send_region(qbus_client* client, const char* key, qbus_region* region,
                              const qbus_send_options* options);
/* Sends bytes [offset, offset + length); the region stays usable for more slices. */
QBUS_API int qbus_send_region_slice(qbus_client* client, const char* key, qbus_region* region,
                                    size_t offset, size_t length);
QBUS_API int qbus_send_region_to_pid(qbus_client* client, uint32_t pid, qbus_region* region,
                                     const qbus_direct_options* options);
QBUS_API int qbus_publish_region(qbus_client* client, const char* subject, qbus_region* region,
                                 const qbus_publish_options* options);
QBUS_API void qbus_region_free(qbus_region* region);

/* A named region several processes map at once (SharedRegion in the C++ API). */
QBUS_API int qbus_shared_region_create(qbus_client* client, const char* key, size_t size,
                                       unsigned mode, qbus_shared_region** region);
QBUS_API int qbus_shared_region_attach(qbus_client* client, const char* key, int writable,
                                       qbus_shared_region** region);
QBUS_API int qbus_shared_region_remove(qbus_client* client, const char* key);
/* *data NULL when attached read-only (use qbus_shared_region_bytes); page-aligned. */
QBUS_API int qbus_shared_region_data(qbus_shared_region* region, void** data, size_t* size);
QBUS_API int qbus_shared_region_bytes(const qbus_shared_region* region, const void** data,
                                      size_t* size);
QBUS_API void qbus_shared_region_free(qbus_shared_region* region);

#ifdef __cplusplus
}
#endif

#endif /* QBUS_QBUS_H */
