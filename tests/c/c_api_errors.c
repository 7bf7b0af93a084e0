/* The C API from C11 against the real qbusd (c_api_test.cpp starts a daemon per case):
 * Error names and texts, NULL handles, bad arguments and handle lifetimes. */
#include "c_api_cases.h"
#include "c_check.h"

/* ---- Errors ------------------------------------------------------------------------------ */

/* What another thread sees of the thread-local last error, and a message freed there. */
struct probe {
  qbus_message* message;
  char before[256];
  int failed;
  char after[256];
};

static void* probe_thread(void* arg) {
  struct probe* p = arg;
  snprintf(p->before, sizeof p->before, "%s", qbus_last_error());
  p->failed = qbus_sync(NULL);
  snprintf(p->after, sizeof p->after, "%s", qbus_last_error());
  qbus_message_free(p->message);
  return NULL;
}

int qbus_ctest_errors(const char* address, char* why, size_t why_len) {
  static const struct {
    int code;
    const char* name;
  } names[] = {
      {QBUS_OK, "ok"},
      {QBUS_E_BAD_MAGIC, "bad_magic"},
      {QBUS_E_UNSUPPORTED_VERSION, "unsupported_version"},
      {QBUS_E_FRAME_TOO_LARGE, "frame_too_large"},
      {QBUS_E_MALFORMED_HEADER, "malformed_header"},
      {QBUS_E_MALFORMED_FRAME, "malformed_frame"},
      {QBUS_E_UNKNOWN_FRAME_TYPE, "unknown_frame_type"},
      {QBUS_E_HANDSHAKE_REQUIRED, "handshake_required"},
      {QBUS_E_HANDSHAKE_TIMEOUT, "handshake_timeout"},
      {QBUS_E_UNEXPECTED_FRAME, "unexpected_frame"},
      {QBUS_E_INVALID_KEY, "invalid_key"},
      {QBUS_E_PAYLOAD_TOO_LARGE, "payload_too_large"},
      {QBUS_E_QUEUE_FULL, "queue_full"},
      {QBUS_E_TIMEOUT, "timeout"},
      {QBUS_E_QUOTA_EXCEEDED, "quota_exceeded"},
      {QBUS_E_TOO_MANY_RECEIVES, "too_many_receives"},
      {QBUS_E_QUEUE_CONFLICT, "queue_conflict"},
      {QBUS_E_TOO_MANY_QUEUES, "too_many_queues"},
      {QBUS_E_TOO_MANY_CONNECTIONS, "too_many_connections"},
      {QBUS_E_QUEUE_DELETED, "queue_deleted"},
      {QBUS_E_NO_SUCH_PEER, "no_such_peer"},
      {QBUS_E_PEER_BUSY, "peer_busy"},
      {QBUS_E_REPLY_EXPIRED, "reply_expired"},
      {QBUS_E_NOT_INBOX_OWNER, "not_inbox_owner"},
      {QBUS_E_AUTH_FAILED, "auth_failed"},
      {QBUS_E_TOO_MANY_REQUESTS, "too_many_requests"},
      {QBUS_E_NO_SUCH_REGION, "no_such_region"},
      {QBUS_E_PERMISSION_DENIED, "permission_denied"},
      {QBUS_E_DISCONNECTED_BY_OPERATOR, "disconnected_by_operator"},
      {QBUS_E_NO_SUCH_QUEUE, "no_such_queue"},
      {QBUS_E_UNKNOWN_DELIVERY, "unknown_delivery"},
      {QBUS_E_DELIVERY_TIMED_OUT, "delivery_timed_out"},
      {QBUS_E_TOO_MANY_UNACKED, "too_many_unacked"},
      {QBUS_E_NO_SUCH_SUBSCRIPTION, "no_such_subscription"},
      {QBUS_E_SINGLE_ACTIVE_CONSUMER, "single_active_consumer"},
      {QBUS_E_STORAGE_FAILED, "storage_failed"},
      {QBUS_E_INVALID_SUBJECT, "invalid_subject"},
      {QBUS_E_TOO_MANY_SUBSCRIPTIONS, "too_many_subscriptions"},
      {QBUS_E_SLOW_SUBSCRIBER, "slow_subscriber"},
      {QBUS_E_INTERNAL_ERROR, "internal_error"},
      {QBUS_E_SHUTTING_DOWN, "shutting_down"},
      {QBUS_E_CONNECT_FAILED, "connect_failed"},
      {QBUS_E_CONNECTION_CLOSED, "connection_closed"},
      {QBUS_E_PROTOCOL_VIOLATION, "protocol_violation"},
      {QBUS_E_INVALID_ARGUMENT, "invalid_argument"},
      {QBUS_E_IO_ERROR, "io_error"},
      {QBUS_E_BAD_ADDRESS, "bad_address"},
      {QBUS_E_OUT_OF_MEMORY, "out_of_memory"},
  };
  static const int unknown[] = {-1, 5, 15, 49, 52, 199, 207, 65536};
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_client* fresh = NULL;
  qbus_client* refused = NULL;
  qbus_subscription* sub = NULL;
  qbus_message* m = NULL;
  qbus_client_options co;
  struct probe probe;
  pthread_t thread;
  char missing[512];
  char long_key[257];
  char main_error[512];
  memset(&probe, 0, sizeof probe);
  why[0] = '\0';

  for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i)
    CHECK_STR(NULL, qbus_strerror(names[i].code), names[i].name);
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; ++i)
    CHECK_STR(NULL, qbus_strerror(unknown[i]), "unknown");

  /* Connecting to nothing, or to an address of no known kind. */
  CHECK(NULL, missing_socket(address, missing, sizeof missing) == 0);
  CHECK_OK(NULL, qbus_client_options_init(&co));
  co.address = missing;
  co.connect_timeout_ms = LONG_MS;
  CHECK_NONE(NULL, QBUS_E_CONNECT_FAILED, refused, qbus_client_connect(&co, &refused));
  CHECK_CONTAINS(NULL, qbus_last_error(), "missing.sock");
  co.address = "carrier-pigeon:x";
  CHECK_NONE(NULL, QBUS_E_BAD_ADDRESS, refused, qbus_client_connect(&co, &refused));
  CHECK_NONEMPTY(NULL, qbus_last_error());

  /* Keys and subjects are checked before anything is sent, and the text names them. */
  CONNECT(a, "c-a");
  CONNECT(b, "c-b");
  CONNECT(fresh, "c-fresh");
  CHECK_RC(a, QBUS_E_INVALID_KEY, qbus_send(a, "has space", "x", 1, NULL));
  CHECK_CONTAINS(a, qbus_last_error(), "has space");
  CHECK_RC(a, QBUS_E_INVALID_KEY, qbus_send(a, "", "x", 1, NULL));
  memset(long_key, 'k', 256);
  long_key[256] = '\0';
  CHECK_RC(a, QBUS_E_INVALID_KEY, qbus_send(a, long_key, "x", 1, NULL));
  CHECK_RC(a, QBUS_E_INVALID_KEY, qbus_send(a, "has space", "x", 1, NULL));
  long_key[255] = '\0';
  CHECK_OK(a, qbus_send(a, long_key, "longest", 7, NULL));
  RECEIVE(a, long_key, 0, m);
  CHECK_TEXT(a, m, "longest");
  CHECK_RC(b, QBUS_E_INVALID_SUBJECT, qbus_publish(b, "a..b", "x", 1, NULL));
  CHECK_CONTAINS(b, qbus_last_error(), "a..b");
  CHECK_NONE(b, QBUS_E_INVALID_SUBJECT, sub, qbus_subscribe_subject(b, "a.>.b", NULL, &sub));

  /* The last error of a client is its own: a's is still its key, b's the pattern, and a
   * client that never failed has none. */
  CHECK_CONTAINS(a, qbus_client_last_error(a), "has space");
  CHECK_CONTAINS(b, qbus_client_last_error(b), "a.>.b");
  CHECK_STR(fresh, qbus_client_last_error(fresh), "");
  CHECK(NULL, qbus_client_last_error(NULL) == NULL);

  /* The thread's last error is the thread's: a new thread starts with none, its failure
   * stays there, and a message may be freed on it. */
  snprintf(main_error, sizeof main_error, "%s", qbus_last_error());
  CHECK(NULL, main_error[0] != '\0');
  probe.message = m;
  m = NULL;
  if (pthread_create(&thread, NULL, probe_thread, &probe) != 0) {
    m = probe.message;
    FAIL_AT(NULL, "pthread_create failed");
  }
  CHECK_EQ(NULL, pthread_join(thread, NULL), 0);
  CHECK_STR(NULL, probe.before, "");
  CHECK_EQ(NULL, probe.failed, QBUS_E_INVALID_ARGUMENT);
  CHECK(NULL, probe.after[0] != '\0');
  CHECK_STR(NULL, qbus_last_error(), main_error);
done:
  qbus_message_free(m);
  qbus_subscription_free(sub);
  qbus_client_free(refused);
  qbus_client_free(fresh);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}

/* ---- A NULL handle ----------------------------------------------------------------------- */

int qbus_ctest_null_handles(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* c = NULL;
  qbus_message* m = NULL;
  qbus_message* out = NULL;
  qbus_subscription* sub = NULL;
  qbus_region* region = NULL;
  qbus_shared_region* shared = NULL;
  qbus_message* batch[2] = {NULL};
  qbus_session_info session;
  qbus_message_info info;
  qbus_header header;
  const char* text = NULL;
  const void* cdata = NULL;
  void* data = NULL;
  size_t size = 0;
  uint64_t u64 = 0;
  int i32 = 0;
  why[0] = '\0';

  /* Every other argument is valid: only the handle is wrong. */
  CONNECT(c, "c-valid");
  CHECK_OK(c, qbus_send(c, "c.valid", "x", 1, NULL));
  RECEIVE(c, "c.valid", 0, m);
  CHECK_OK(c, info_of(m, &info));

  /* Each _init needs its struct. */
  CHECK_INVALID(NULL, qbus_client_options_init(NULL));
  CHECK_NONEMPTY(NULL, qbus_last_error());
  CHECK_INVALID(NULL, qbus_send_options_init(NULL));
  CHECK_INVALID(NULL, qbus_queue_options_init(NULL));
  CHECK_INVALID(NULL, qbus_direct_options_init(NULL));
  CHECK_INVALID(NULL, qbus_message_info_init(NULL));
  CHECK_INVALID(NULL, qbus_subscribe_options_init(NULL));
  CHECK_INVALID(NULL, qbus_subject_options_init(NULL));
  CHECK_INVALID(NULL, qbus_publish_options_init(NULL));

  /* Clients. */
  CHECK(NULL, qbus_client_last_error(NULL) == NULL);
  CHECK_INVALID(NULL, qbus_client_session(NULL, &session));
  CHECK_NONEMPTY(NULL, qbus_last_error());
  CHECK_INVALID(NULL, qbus_client_fd(NULL, &i32));
  CHECK_INVALID(NULL, qbus_client_wants_write(NULL, &i32));
  CHECK_INVALID(NULL, qbus_client_process(NULL));
  CHECK_INVALID(NULL, qbus_send(NULL, "c.valid", "x", 1, NULL));
  CHECK_INVALID(NULL, qbus_receive(NULL, "c.valid", 0, 0, &out));
  CHECK_INVALID(NULL, qbus_receive_batch(NULL, "c.valid", 2, 0, 0, batch, &size));
  CHECK_INVALID(NULL, qbus_declare(NULL, "c.valid", NULL));
  CHECK_INVALID(NULL, qbus_purge(NULL, "c.valid", &u64));
  CHECK_INVALID(NULL, qbus_delete_queue(NULL, "c.valid", &u64));
  CHECK_INVALID(NULL, qbus_sync(NULL));
  CHECK_INVALID(NULL, qbus_send_failures(NULL, &u64, &i32, &text));
  CHECK_INVALID(NULL, qbus_batch_begin(NULL));
  CHECK_INVALID(NULL, qbus_batch_end(NULL));
  CHECK_INVALID(NULL, qbus_ack(NULL, m, 1));
  CHECK_INVALID(NULL, qbus_ack_up_to(NULL, 1, 1));
  CHECK_INVALID(NULL, qbus_nack(NULL, m, QBUS_NACK_REQUEUE, 0, 1));
  CHECK_INVALID(NULL, qbus_extend(NULL, m, 1000, 1));
  CHECK_INVALID(NULL, qbus_send_to_pid(NULL, (uint32_t)getpid(), "x", 1, NULL));
  CHECK_INVALID(NULL, qbus_send_to_client(NULL, 1, "x", 1, NULL));
  CHECK_INVALID(NULL, qbus_receive_direct(NULL, 0, &out));
  CHECK_INVALID(NULL, qbus_request(NULL, "c.valid", "x", 1, 0, NULL, 0, &out));
  CHECK_INVALID(NULL, qbus_reply(NULL, m, "x", 1));
  CHECK_INVALID(NULL, qbus_subscribe(NULL, "c.valid", NULL, &sub));
  CHECK_INVALID(NULL, qbus_subscribe_subject(NULL, "c.valid", NULL, &sub));
  CHECK(NULL, sub == NULL && out == NULL);
  CHECK_INVALID(NULL, qbus_publish(NULL, "c.valid", "x", 1, NULL));
  CHECK_INVALID(NULL, qbus_region_allocate(NULL, 4096, &region));
  CHECK(NULL, region == NULL);
  CHECK_INVALID(NULL, qbus_shared_region_create(NULL, "c.valid", 4096, 0600, &shared));
  CHECK_INVALID(NULL, qbus_shared_region_attach(NULL, "c.valid", 0, &shared));
  CHECK(NULL, shared == NULL);
  CHECK_INVALID(NULL, qbus_shared_region_remove(NULL, "c.valid"));

  /* Messages, given to a valid client where there is one. */
  CHECK_INVALID(NULL, qbus_message_key(NULL, &text));
  CHECK_INVALID(NULL, qbus_message_payload(NULL, &cdata, &size));
  CHECK_INVALID(NULL, qbus_message_info_get(NULL, &info));
  CHECK_INVALID(NULL, qbus_message_header_at(NULL, 0, &header));
  CHECK_INVALID(NULL, qbus_message_header(NULL, "x", &cdata, &size));
  CHECK_INVALID(c, qbus_ack(c, NULL, 1));
  CHECK_INVALID(c, qbus_nack(c, NULL, QBUS_NACK_REQUEUE, 0, 1));
  CHECK_INVALID(c, qbus_extend(c, NULL, 1000, 1));
  CHECK_INVALID(c, qbus_reply(c, NULL, "x", 1));

  /* Subscriptions. */
  CHECK_INVALID(NULL, qbus_subscription_next(NULL, 0, &out));
  CHECK_INVALID(NULL, qbus_subscription_pending(NULL, &size));
  CHECK_INVALID(NULL, qbus_subscription_active(NULL, &i32));
  CHECK_INVALID(NULL, qbus_subscription_cancel(NULL));

  /* Regions and shared regions. */
  CHECK_INVALID(NULL, qbus_region_data(NULL, &data, &size));
  CHECK_INVALID(NULL, qbus_region_info(NULL, &u64, &i32));
  CHECK_INVALID(c, qbus_send_region(c, "c.valid", NULL, NULL));
  CHECK_INVALID(c, qbus_send_region_slice(c, "c.valid", NULL, 0, 1));
  CHECK_INVALID(c, qbus_send_region_to_pid(c, (uint32_t)getpid(), NULL, NULL));
  CHECK_INVALID(c, qbus_publish_region(c, "c.valid", NULL, NULL));
  CHECK_OK(c, qbus_region_allocate(c, 4096, &region));
  CHECK_INVALID(NULL, qbus_send_region(NULL, "c.valid", region, NULL));
  CHECK_INVALID(NULL, qbus_send_region_slice(NULL, "c.valid", region, 0, 1));
  CHECK_INVALID(NULL, qbus_send_region_to_pid(NULL, (uint32_t)getpid(), region, NULL));
  CHECK_INVALID(NULL, qbus_publish_region(NULL, "c.valid", region, NULL));
  CHECK_INVALID(NULL, qbus_shared_region_data(NULL, &data, &size));
  CHECK_INVALID(NULL, qbus_shared_region_bytes(NULL, &cdata, &size));

  /* The client refused nothing above that it was not given: the region is still writable,
   * and the queue still empty. */
  CHECK_OK(c, qbus_region_data(region, &data, &size));
  CHECK(c, data != NULL && size == 4096);
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(c, QBUS_OK, m, qbus_receive(c, "c.valid", 0, 0, &m));

  /* Freeing NULL does nothing. */
  qbus_client_free(NULL);
  qbus_message_free(NULL);
  qbus_subscription_free(NULL);
  qbus_region_free(NULL);
  qbus_shared_region_free(NULL);
done:
  for (size_t i = 0; i < sizeof batch / sizeof batch[0]; ++i)
    qbus_message_free(batch[i]);
  qbus_message_free(out);
  qbus_message_free(m);
  qbus_subscription_free(sub);
  qbus_region_free(region);
  qbus_shared_region_free(shared);
  qbus_client_free(c);
  return rc;
}

/* ---- Bad arguments ----------------------------------------------------------------------- */

int qbus_ctest_bad_arguments(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* c = NULL;
  qbus_message* m = NULL;
  qbus_message* none = NULL;
  qbus_subscription* sub = NULL;
  qbus_region* region = NULL;
  qbus_shared_region* shared = NULL;
  qbus_message* batch[2] = {NULL};
  qbus_session_info session;
  qbus_send_options so;
  qbus_publish_options po;
  qbus_direct_options dopt;
  qbus_client_options co;
  const void* cdata = NULL;
  void* data = NULL;
  size_t size = 0;
  why[0] = '\0';

  CONNECT(c, "c-bad-input");
  CHECK_OK(c, session_of(c, &session));
  CHECK_OK(c, qbus_subscribe_subject(c, "c.bad.>", NULL, &sub));
  CHECK_OK(c, qbus_region_allocate(c, 4096, &region));
  CHECK_OK(c, qbus_shared_region_create(c, "c.bad", 4096, 0600, &shared));
  CHECK_OK(c, qbus_send(c, "c.bad", "x", 1, NULL));
  RECEIVE(c, "c.bad", 0, m);

  /* A NULL buffer with a non-zero length (with length 0 it is the empty payload). */
  CHECK_INVALID(c, qbus_send(c, "c.bad", NULL, 5, NULL));
  CHECK_NONEMPTY(c, qbus_last_error());
  CHECK_NONEMPTY(c, qbus_client_last_error(c));
  CHECK_INVALID(c, qbus_publish(c, "c.bad.x", NULL, 5, NULL));
  CHECK_INVALID(c, qbus_send_to_pid(c, session.pid, NULL, 5, NULL));
  CHECK_INVALID(c, qbus_send_to_client(c, session.client_id, NULL, 5, NULL));
  CHECK_INVALID(c, qbus_request(c, "c.bad", NULL, 5, 0, NULL, 0, &none));
  CHECK_INVALID(c, qbus_request(c, "c.bad", "x", 1, 0, NULL, 2, &none));
  CHECK_OK(c, qbus_send_options_init(&so));
  so.header_count = 2;
  CHECK_INVALID(c, qbus_send(c, "c.bad", "x", 1, &so));
  CHECK_OK(c, qbus_publish_options_init(&po));
  po.header_count = 2;
  CHECK_INVALID(c, qbus_publish(c, "c.bad.x", "x", 1, &po));
  CHECK_OK(c, qbus_direct_options_init(&dopt));
  dopt.header_count = 2;
  CHECK_INVALID(c, qbus_send_to_pid(c, session.pid, "x", 1, &dopt));
  /* A NULL key or pattern. */
  CHECK_INVALID(c, qbus_send(c, NULL, "x", 1, NULL));
  CHECK_INVALID(c, qbus_publish(c, NULL, "x", 1, NULL));

  /* A NULL required out parameter. */
  CHECK_OK(NULL, qbus_client_options_init(&co));
  co.address = address;
  CHECK_INVALID(NULL, qbus_client_connect(&co, NULL));
  CHECK_INVALID(c, qbus_client_session(c, NULL));
  CHECK_INVALID(c, qbus_client_fd(c, NULL));
  CHECK_INVALID(c, qbus_client_wants_write(c, NULL));
  CHECK_INVALID(c, qbus_receive(c, "c.bad", 0, 0, NULL));
  CHECK_INVALID(c, qbus_receive_batch(c, "c.bad", 2, 0, 0, NULL, &size));
  CHECK_INVALID(c, qbus_receive_batch(c, "c.bad", 2, 0, 0, batch, NULL));
  CHECK_INVALID(c, qbus_receive_direct(c, 0, NULL));
  CHECK_INVALID(c, qbus_request(c, "c.bad", "x", 1, 0, NULL, 0, NULL));
  CHECK_INVALID(c, qbus_message_key(m, NULL));
  CHECK_INVALID(c, qbus_message_payload(m, NULL, &size));
  CHECK_INVALID(c, qbus_message_payload(m, &cdata, NULL));
  CHECK_INVALID(c, qbus_message_info_get(m, NULL));
  CHECK_INVALID(c, qbus_message_header_at(m, 0, NULL));
  CHECK_INVALID(c, qbus_message_header(m, "x", NULL, &size));
  CHECK_INVALID(c, qbus_message_header(m, NULL, &cdata, &size));
  CHECK_INVALID(c, qbus_subscribe(c, "c.bad", NULL, NULL));
  CHECK_INVALID(c, qbus_subscribe_subject(c, "c.bad.>", NULL, NULL));
  CHECK_INVALID(c, qbus_subscription_next(sub, 0, NULL));
  CHECK_INVALID(c, qbus_subscription_pending(sub, NULL));
  CHECK_INVALID(c, qbus_subscription_active(sub, NULL));
  CHECK_INVALID(c, qbus_region_allocate(c, 4096, NULL));
  CHECK_INVALID(c, qbus_region_data(region, NULL, &size));
  CHECK_INVALID(c, qbus_shared_region_create(c, "c.bad2", 4096, 0600, NULL));
  CHECK_INVALID(c, qbus_shared_region_attach(c, "c.bad", 0, NULL));
  CHECK_INVALID(c, qbus_shared_region_data(shared, NULL, &size));
  CHECK_INVALID(c, qbus_shared_region_bytes(shared, NULL, &size));

  /* None of it reached the broker or spoiled the connection: nothing was queued, sent to
   * the inbox or published, the handles still work, and nothing was counted as failed. */
  CHECK_NONE(c, QBUS_OK, none, qbus_receive(c, "c.bad", 0, 0, &none));
  CHECK_NONE(c, QBUS_OK, none, qbus_receive_direct(c, 0, &none));
  CHECK_OK(c, qbus_sync(c));
  CHECK_NONE(c, QBUS_OK, none, qbus_subscription_next(sub, 0, &none));
  CHECK_EQ(c, failures_of(c), 0);
  CHECK_OK(c, qbus_region_data(region, &data, &size));
  CHECK(c, data != NULL && size == 4096);
  CHECK_OK(c, qbus_shared_region_data(shared, &data, &size));
  CHECK(c, data != NULL && size == 4096);
done:
  for (size_t i = 0; i < sizeof batch / sizeof batch[0]; ++i)
    qbus_message_free(batch[i]);
  qbus_message_free(none);
  qbus_message_free(m);
  qbus_subscription_free(sub);
  qbus_region_free(region);
  qbus_shared_region_free(shared);
  qbus_client_free(c);
  return rc;
}

/* ---- Handle lifetimes -------------------------------------------------------------------- */

int qbus_ctest_handle_lifetimes(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* c = NULL;
  qbus_client* gone = NULL;
  qbus_message* m = NULL;
  qbus_message* big = NULL;
  qbus_subscription* sub = NULL;
  qbus_region* region = NULL;
  qbus_shared_region* shared = NULL;
  unsigned char* pattern = NULL;
  const char* key = NULL;
  const void* cdata = NULL;
  void* data = NULL;
  size_t size = 0;
  int active = -1;
  qbus_session_info session;
  why[0] = '\0';

  /* Use after free and double free, kind by kind. Nothing of the same kind is made between
   * the free and the use: a new handle could take the freed address, which no check can
   * tell from the old one. */
  CONNECT(c, "c-lifetimes");
  CHECK_OK(c, qbus_send(c, "c.life", "x", 1, NULL));
  RECEIVE(c, "c.life", 0, m);
  {
    qbus_message* freed = m;
    m = NULL;
    qbus_message_free(freed);
    CHECK_INVALID(c, qbus_message_payload(freed, &cdata, &size));
    CHECK_INVALID(c, qbus_message_key(freed, &key));
    qbus_message_free(freed);
  }
  CHECK_OK(c, qbus_region_allocate(c, 4096, &region));
  {
    qbus_region* freed = region;
    region = NULL;
    qbus_region_free(freed);
    CHECK_INVALID(c, qbus_region_data(freed, &data, &size));
    CHECK_INVALID(c, qbus_send_region(c, "c.life", freed, NULL));
    qbus_region_free(freed);
  }
  CHECK_OK(c, qbus_shared_region_create(c, "c.life", 4096, 0600, &shared));
  {
    qbus_shared_region* freed = shared;
    shared = NULL;
    qbus_shared_region_free(freed);
    CHECK_INVALID(c, qbus_shared_region_bytes(freed, &cdata, &size));
    qbus_shared_region_free(freed);
  }
  CHECK_OK(c, qbus_subscribe_subject(c, "c.life.>", NULL, &sub));
  {
    qbus_subscription* freed = sub;
    sub = NULL;
    qbus_subscription_free(freed);
    CHECK_INVALID(c, qbus_subscription_active(freed, &active));
    CHECK_INVALID(c, qbus_subscription_next(freed, 0, &m));
    qbus_subscription_free(freed);
  }
  CHECK_OK(NULL, connect_with(address, "c-freed", 0, &gone));
  {
    qbus_client* freed = gone;
    gone = NULL;
    qbus_client_free(freed);
    CHECK_INVALID(NULL, qbus_client_session(freed, &session));
    CHECK(NULL, qbus_client_last_error(freed) == NULL);
    qbus_client_free(freed);
  }

  /* Handles that outlive their client: a subscription's next() fails and its free, like a
   * region's and a shared region's, only frees memory; messages stay readable, a region
   * message's mapping included. */
  pattern = make_pattern(200000, 9);
  CHECK(NULL, pattern != NULL);
  CHECK_OK(NULL, connect_with(address, "c-goes-first", 0, &gone));
  CHECK_OK(gone, qbus_subscribe_subject(gone, "c.orphan.>", NULL, &sub));
  CHECK_OK(gone, qbus_region_allocate(gone, 4096, &region));
  CHECK_OK(gone, qbus_shared_region_create(gone, "c.orphan", 4096, 0600, &shared));
  CHECK_OK(gone, qbus_send(gone, "c.kept", "kept", 4, NULL));
  CHECK_OK(gone, qbus_send(gone, "c.kept", pattern, 200000, NULL));
  RECEIVE(gone, "c.kept", 0, m);
  RECEIVE(gone, "c.kept", 0, big);
  qbus_client_free(gone);
  gone = NULL;
  {
    qbus_message* orphan = (void*)&not_a_handle;
    const int code = qbus_subscription_next(sub, 0, &orphan);
    if (orphan != (void*)&not_a_handle && orphan != NULL) qbus_message_free(orphan);
    if (code == QBUS_OK) FAIL_AT(NULL, "next() of a subscription whose client was freed: OK");
  }
  qbus_subscription_free(sub);
  sub = NULL;
  qbus_region_free(region);
  region = NULL;
  qbus_shared_region_free(shared);
  shared = NULL;
  CHECK_TEXT(NULL, m, "kept");
  {
    qbus_message_info info;
    CHECK_OK(NULL, info_of(big, &info));
    CHECK_EQ(NULL, info.in_shared_memory, 1);
  }
  CHECK_PAYLOAD(NULL, big, pattern, 200000);
done:
  qbus_message_free(big);
  qbus_message_free(m);
  qbus_subscription_free(sub);
  qbus_region_free(region);
  qbus_shared_region_free(shared);
  qbus_client_free(gone);
  qbus_client_free(c);
  free(pattern);
  return rc;
}
