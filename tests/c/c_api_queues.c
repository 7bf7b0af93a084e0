/* The C API from C11 against the real qbusd (c_api_test.cpp starts a daemon per case):
 * Options, queues, batches, acknowledgements, direct messages, requests. */
#include <stddef.h>

#include "c_api_cases.h"
#include "c_check.h"

/* ---- Options structs --------------------------------------------------------------------- */

int qbus_ctest_options(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* c = NULL;
  qbus_client* refused = NULL;
  qbus_subscription* sub = NULL;
  qbus_message* m = NULL;
  qbus_client_options co;
  qbus_send_options so;
  qbus_queue_options qo;
  qbus_direct_options dopt;
  qbus_subscribe_options subo;
  qbus_subject_options sjo;
  qbus_publish_options po;
  qbus_message_info info;
  why[0] = '\0';

  /* Poisoned first, so that what is checked is what _init wrote, not zeroed stack. */
  memset(&co, 0xa5, sizeof co);
  CHECK_OK(NULL, qbus_client_options_init(&co));
  CHECK_EQ(NULL, co.struct_size, sizeof co);
  CHECK(NULL, co.address == NULL && co.name == NULL && co.token == NULL);
  CHECK(NULL, co.tls_ca == NULL && co.tls_cert == NULL && co.tls_key == NULL);
  CHECK_EQ(NULL, co.connect_timeout_ms, 5000);
  CHECK_EQ(NULL, co.region_threshold, 65536);
  CHECK_EQ(NULL, co.region_pool_bytes, 0);

  memset(&so, 0xa5, sizeof so);
  CHECK_OK(NULL, qbus_send_options_init(&so));
  CHECK_EQ(NULL, so.struct_size, sizeof so);
  CHECK(NULL, so.headers == NULL);
  CHECK_EQ(NULL, so.header_count, 0);
  CHECK_EQ(NULL, so.confirm, 0);
  CHECK_EQ(NULL, so.ttl_ms, 0);
  CHECK_EQ(NULL, so.delay_ms, 0);
  CHECK_EQ(NULL, so.priority, 0);

  memset(&qo, 0xa5, sizeof qo);
  CHECK_OK(NULL, qbus_queue_options_init(&qo));
  CHECK_EQ(NULL, qo.struct_size, sizeof qo);
  CHECK(NULL, qo.max_messages == 0 && qo.max_bytes == 0 && qo.overflow == QBUS_OVERFLOW_DEFAULT);
  CHECK(NULL, qo.ack_timeout_ms == 0 && qo.max_deliveries == 0 && qo.dead_letter == NULL);
  CHECK(NULL, qo.dead_letter_overflow == 0 && qo.ttl_ms == 0 && qo.priorities == 0);
  CHECK(NULL, qo.dead_letter_expired == 0 && qo.single_active_consumer == 0);
  CHECK(NULL, qo.durable == 0 && qo.fsync == QBUS_FSYNC_DEFAULT);

  memset(&dopt, 0xa5, sizeof dopt);
  CHECK_OK(NULL, qbus_direct_options_init(&dopt));
  CHECK_EQ(NULL, dopt.struct_size, sizeof dopt);
  CHECK_EQ(NULL, dopt.wait_ms, 0);
  CHECK_EQ(NULL, dopt.confirm, 1);
  CHECK(NULL, dopt.headers == NULL);
  CHECK_EQ(NULL, dopt.header_count, 0);

  memset(&subo, 0xa5, sizeof subo);
  CHECK_OK(NULL, qbus_subscribe_options_init(&subo));
  CHECK_EQ(NULL, subo.struct_size, sizeof subo);
  CHECK_EQ(NULL, subo.prefetch, 0);
  CHECK_EQ(NULL, subo.ack, 1);

  memset(&sjo, 0xa5, sizeof sjo);
  CHECK_OK(NULL, qbus_subject_options_init(&sjo));
  CHECK_EQ(NULL, sjo.struct_size, sizeof sjo);
  CHECK(NULL, sjo.group == NULL);
  CHECK_EQ(NULL, sjo.max_messages, 0);
  CHECK_EQ(NULL, sjo.max_bytes, 0);
  CHECK_EQ(NULL, sjo.slow, QBUS_SLOW_DEFAULT);

  memset(&po, 0xa5, sizeof po);
  CHECK_OK(NULL, qbus_publish_options_init(&po));
  CHECK_EQ(NULL, po.struct_size, sizeof po);
  CHECK(NULL, po.headers == NULL);
  CHECK_EQ(NULL, po.header_count, 0);
  CHECK_EQ(NULL, po.retain, 0);
  CHECK_EQ(NULL, po.confirm, 0);

  memset(&info, 0xa5, sizeof info);
  CHECK_OK(NULL, qbus_message_info_init(&info));
  CHECK_EQ(NULL, info.struct_size, sizeof info);

  /* _init_size is what _init calls with this header's size. A caller built against a later
   * header, with fields this library does not know, passes more: all of it is zeroed and
   * its size kept. Less than the struct's size in its first version (QBUS_0) is refused. */
  {
    unsigned char later[sizeof(qbus_send_options) + 16];
    memset(later, 0xa5, sizeof later);
    CHECK_OK(NULL, qbus_send_options_init_size((qbus_send_options*)(void*)later, sizeof later));
    CHECK_EQ(NULL, ((qbus_send_options*)(void*)later)->struct_size, sizeof later);
    for (size_t i = sizeof(size_t); i < sizeof later; ++i)
      CHECK_EQ(NULL, later[i], 0);
    CHECK_INVALID(NULL, qbus_send_options_init_size(&so, sizeof so - 1));
    CHECK_CONTAINS(NULL, qbus_last_error(), "struct_size");
    CHECK_OK(NULL, qbus_send_options_init(&so));
  }

  /* A caller built before region_pool_bytes existed passes QBUS_0's size: accepted, and
   * _init writes nothing past it. */
  {
    unsigned char older[sizeof(qbus_client_options)];
    const size_t qbus0 = offsetof(qbus_client_options, region_pool_bytes);
    qbus_client* oc = NULL;
    memset(older, 0xa5, sizeof older);
    CHECK_OK(NULL, qbus_client_options_init_size((qbus_client_options*)(void*)older, qbus0));
    for (size_t i = qbus0; i < sizeof older; ++i)
      CHECK_EQ(NULL, older[i], 0xa5);
    ((qbus_client_options*)(void*)older)->address = address;
    CHECK_OK(NULL, qbus_client_connect((qbus_client_options*)(void*)older, &oc));
    qbus_client_free(oc);
  }

  /* An options struct nobody initialised (struct_size 0) is refused before anything is
   * sent, whatever its other fields say. */
  memset(&co, 0, sizeof co);
  co.address = address;
  CHECK_NONE(NULL, QBUS_E_INVALID_ARGUMENT, refused, qbus_client_connect(&co, &refused));

  CONNECT(c, "c-options");
  memset(&so, 0, sizeof so);
  so.confirm = 1;
  CHECK_INVALID(c, qbus_send(c, "c.opts", "refused", 7, &so));
  memset(&qo, 0, sizeof qo);
  qo.max_messages = 1;
  CHECK_INVALID(c, qbus_declare(c, "c.opts", &qo));
  memset(&dopt, 0, sizeof dopt);
  {
    qbus_session_info s;
    CHECK_OK(c, session_of(c, &s));
    CHECK_INVALID(c, qbus_send_to_pid(c, s.pid, "refused", 7, &dopt));
  }
  memset(&subo, 0, sizeof subo);
  CHECK_NONE(c, QBUS_E_INVALID_ARGUMENT, sub, qbus_subscribe(c, "c.opts", &subo, &sub));
  memset(&sjo, 0, sizeof sjo);
  CHECK_NONE(c, QBUS_E_INVALID_ARGUMENT, sub, qbus_subscribe_subject(c, "c.opts.>", &sjo, &sub));
  memset(&po, 0, sizeof po);
  CHECK_INVALID(c, qbus_publish(c, "c.opts.x", "refused", 7, &po));

  /* Nothing of the above reached the broker: the queue had no options to conflict with
   * (it takes a max_messages of 2 now) and holds only what is sent next. */
  CHECK_OK(c, qbus_queue_options_init(&qo));
  qo.max_messages = 2;
  CHECK_OK(c, qbus_declare(c, "c.opts", &qo));
  CHECK_OK(c, qbus_send(c, "c.opts", "probe", 5, NULL));
  RECEIVE(c, "c.opts", 0, m);
  CHECK_TEXT(c, m, "probe");
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(c, QBUS_OK, m, qbus_receive(c, "c.opts", 0, 0, &m));
  CHECK_NONE(c, QBUS_OK, m, qbus_receive_direct(c, 0, &m));

  /* The message info of a caller that did not initialise it is refused too. */
  CHECK_OK(c, qbus_send(c, "c.opts", "probe", 5, NULL));
  RECEIVE(c, "c.opts", 0, m);
  memset(&info, 0, sizeof info);
  CHECK_INVALID(c, qbus_message_info_get(m, &info));
  CHECK_OK(c, info_of(m, &info));
  CHECK_EQ(c, info.struct_size, sizeof info);
  /* The info carries the key and the payload, the same as their own calls give. */
  {
    const char* key = NULL;
    const void* data = NULL;
    size_t len = 0;
    CHECK_OK(c, qbus_message_key(m, &key));
    CHECK_OK(c, qbus_message_payload(m, &data, &len));
    CHECK(c, info.key == key && strcmp(info.key, "c.opts") == 0);
    CHECK(c, info.payload == data && info.payload_len == 5 && len == 5);
  }
done:
  qbus_subscription_free(sub);
  qbus_message_free(m);
  qbus_client_free(refused);
  qbus_client_free(c);
  return rc;
}

/* ---- Queues: send and receive ------------------------------------------------------------ */

int qbus_ctest_send_receive(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_message* m = NULL;
  qbus_message* batch[10] = {NULL};
  size_t count = 0;
  qbus_session_info sa, sb;
  qbus_message_info info;
  qbus_send_options so;
  qbus_queue_options qo;
  unsigned char binary[256];
  const unsigned char header_bytes[3] = {0x00, 0x01, 0xff};
  const qbus_header headers[3] = {{"content-type", "text/plain", 10},
                                  {"bin", header_bytes, sizeof header_bytes},
                                  {"empty", "", 0}};
  why[0] = '\0';

  CONNECT(a, "c-producer");
  CONNECT(b, "c-consumer");
  CHECK_OK(a, session_of(a, &sa));
  CHECK_OK(b, session_of(b, &sb));
  CHECK_EQ(a, sa.pid, getpid());
  CHECK_EQ(a, sa.uid, getuid());
  CHECK_EQ(a, sa.gid, getgid());
  CHECK(a, sa.client_id != 0 && sb.client_id != 0 && sa.client_id != sb.client_id);
  CHECK_EQ(a, sa.max_payload, 1u << 20);
  CHECK_EQ(a, sa.protocol_version, 2);

  /* Plain: a pipelined send of the defaults (options NULL). */
  CHECK_OK(a, qbus_send(a, "c.jobs", "hello", 5, NULL));
  RECEIVE(b, "c.jobs", 0, m);
  CHECK_TEXT(b, m, "hello");
  CHECK_KEY(b, m, "c.jobs");
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.sender_pid, getpid());
  CHECK_EQ(b, info.sender_uid, getuid());
  CHECK_EQ(b, info.sender_client_id, sa.client_id);
  CHECK_EQ(b, info.request_id, 0);
  CHECK_EQ(b, info.is_request, 0);
  CHECK_EQ(b, info.is_direct, 0);
  CHECK_EQ(b, info.in_shared_memory, 0);
  CHECK_EQ(b, info.delivery_tag, 0);
  CHECK_EQ(b, info.delivery_count, 1);
  CHECK_EQ(b, info.redelivered, 0);
  CHECK_EQ(b, info.dropped_before, 0);
  CHECK_EQ(b, info.retained, 0);
  CHECK_EQ(b, info.header_count, 0);
  {
    qbus_header h;
    const void* v = "unset";
    size_t vl = 5;
    CHECK_INVALID(b, qbus_message_header_at(m, 0, &h));
    CHECK_OK(b, qbus_message_header(m, "content-type", &v, &vl));
    CHECK(b, v == NULL);
  }

  /* Headers (one binary, one empty) and confirm: the broker's OK comes before the return. */
  CHECK_OK(a, qbus_send_options_init(&so));
  so.headers = headers;
  so.header_count = 3;
  so.confirm = 1;
  CHECK_OK(a, qbus_send(a, "c.jobs", "{}", 2, &so));
  RECEIVE(b, "c.jobs", 0, m);
  CHECK_TEXT(b, m, "{}");
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.header_count, 3);
  for (size_t i = 0; i < 3; ++i) {
    qbus_header h;
    memset(&h, 0, sizeof h);
    CHECK_OK(b, qbus_message_header_at(m, i, &h));
    CHECK_STR(b, h.key, headers[i].key);
    CHECK_EQ(b, h.value_len, headers[i].value_len);
    CHECK(b, h.value_len == 0 || memcmp(h.value, headers[i].value, h.value_len) == 0);
  }
  {
    qbus_header h;
    CHECK_INVALID(b, qbus_message_header_at(m, 3, &h));
  }
  CHECK_HEADER(b, m, "bin", header_bytes, sizeof header_bytes);
  CHECK_HEADER(b, m, "content-type", "text/plain", 10);
  CHECK_HEADER(b, m, "empty", "", 0);

  /* Empty and binary payloads arrive unchanged. */
  for (size_t i = 0; i < sizeof binary; ++i)
    binary[i] = (unsigned char)i;
  CHECK_OK(a, qbus_send(a, "c.bin", NULL, 0, NULL));
  CHECK_OK(a, qbus_send(a, "c.bin", binary, sizeof binary, NULL));
  RECEIVE(b, "c.bin", 0, m);
  CHECK_PAYLOAD(b, m, "", 0);
  RECEIVE(b, "c.bin", 0, m);
  CHECK_PAYLOAD(b, m, binary, sizeof binary);

  /* A receive that times out is no failure: QBUS_OK and no message. */
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(b, QBUS_OK, m, qbus_receive(b, "c.empty", SHORT_MS, 0, &m));
  CHECK_NONE(b, QBUS_OK, m, qbus_receive(b, "c.empty", 0, 0, &m));

  /* receive_batch takes what is queued, in order, at most `max`. qbus_sync: the broker has
   * queued all five before b asks. */
  for (int i = 0; i < 5; ++i) {
    const char digit = (char)('0' + i);
    CHECK_OK(a, qbus_send(a, "c.batch", &digit, 1, NULL));
  }
  CHECK_OK(a, qbus_sync(a));
  CHECK_OK(b, qbus_receive_batch(b, "c.batch", 3, LONG_MS, 0, batch, &count));
  CHECK_EQ(b, count, 3);
  CHECK_TEXT(b, batch[0], "0");
  CHECK_TEXT(b, batch[1], "1");
  CHECK_TEXT(b, batch[2], "2");
  CHECK_KEY(b, batch[2], "c.batch");
  for (size_t i = 0; i < 3; ++i) {
    qbus_message_free(batch[i]);
    batch[i] = NULL;
  }
  CHECK_OK(b, qbus_receive_batch(b, "c.batch", 10, LONG_MS, 0, batch, &count));
  CHECK_EQ(b, count, 2);
  CHECK_TEXT(b, batch[0], "3");
  CHECK_TEXT(b, batch[1], "4");
  for (size_t i = 0; i < 2; ++i) {
    qbus_message_free(batch[i]);
    batch[i] = NULL;
  }
  count = 99;
  CHECK_OK(b, qbus_receive_batch(b, "c.batch", 10, 0, 0, batch, &count));
  CHECK_EQ(b, count, 0);

  /* Priority: the later, higher message is taken first. */
  CHECK_OK(a, qbus_queue_options_init(&qo));
  qo.priorities = 10;
  qo.ttl_ms = 3600 * 1000;
  CHECK_OK(a, qbus_declare(a, "c.prio", &qo));
  CHECK_OK(a, qbus_send_options_init(&so));
  so.confirm = 1;
  so.priority = 1;
  CHECK_OK(a, qbus_send(a, "c.prio", "low", 3, &so));
  so.priority = 9;
  CHECK_OK(a, qbus_send(a, "c.prio", "high", 4, &so));
  RECEIVE(b, "c.prio", 0, m);
  CHECK_TEXT(b, m, "high");
  RECEIVE(b, "c.prio", 0, m);
  CHECK_TEXT(b, m, "low");

  /* A delay of an hour: queued (confirmed), not deliverable now. A ttl well ahead changes
   * nothing for a message taken at once; a negative one is out of range. */
  CHECK_OK(a, qbus_send_options_init(&so));
  so.confirm = 1;
  so.delay_ms = 3600 * 1000;
  CHECK_OK(a, qbus_send(a, "c.delayed", "later", 5, &so));
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(b, QBUS_OK, m, qbus_receive(b, "c.delayed", 0, 0, &m));
  CHECK_OK(a, qbus_send_options_init(&so));
  so.confirm = 1;
  so.ttl_ms = 3600 * 1000;
  CHECK_OK(a, qbus_send(a, "c.ttl", "fresh", 5, &so));
  RECEIVE(b, "c.ttl", 0, m);
  CHECK_TEXT(b, m, "fresh");
  so.ttl_ms = -1;
  CHECK_INVALID(a, qbus_send(a, "c.ttl", "never", 5, &so));
done:
  for (size_t i = 0; i < sizeof batch / sizeof batch[0]; ++i)
    qbus_message_free(batch[i]);
  qbus_message_free(m);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}

/* ---- Queues: declare, purge, delete, sync, send failures --------------------------------- */

int qbus_ctest_queues(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_message* m = NULL;
  qbus_queue_options qo;
  qbus_send_options confirmed;
  uint64_t dropped = 0;
  why[0] = '\0';

  CONNECT(a, "c-owner");
  CONNECT(b, "c-other");
  CHECK_OK(a, qbus_send_options_init(&confirmed));
  confirmed.confirm = 1;

  /* Declaring again with the same options checks them; other options conflict. */
  CHECK_OK(a, qbus_queue_options_init(&qo));
  qo.max_messages = 2;
  qo.max_bytes = 1 << 20;
  qo.overflow = QBUS_OVERFLOW_REJECT;
  CHECK_OK(a, qbus_declare(a, "c.small", &qo));
  CHECK_OK(a, qbus_declare(a, "c.small", &qo));
  qo.max_messages = 3;
  CHECK_RC(a, QBUS_E_QUEUE_CONFLICT, qbus_declare(a, "c.small", &qo));
  CHECK_CONTAINS(a, qbus_last_error(), "max_messages");
  CHECK_CONTAINS(a, qbus_client_last_error(a), "max_messages");

  /* A confirmed send to the full queue returns the refusal; a pipelined one is counted. */
  CHECK_OK(a, qbus_send(a, "c.small", "1", 1, &confirmed));
  CHECK_OK(a, qbus_send(a, "c.small", "2", 1, &confirmed));
  CHECK_RC(a, QBUS_E_QUEUE_FULL, qbus_send(a, "c.small", "3", 1, &confirmed));
  CHECK_NONEMPTY(a, qbus_last_error());
  CHECK_EQ(a, failures_of(a), 0);
  CHECK_OK(a, qbus_send(a, "c.small", "4", 1, NULL));
  CHECK_OK(a, qbus_sync(a));
  {
    uint64_t n = 0;
    int code = 0;
    const char* text = NULL;
    CHECK_OK(a, qbus_send_failures(a, &n, &code, &text));
    CHECK_EQ(a, n, 1);
    CHECK_EQ(a, code, QBUS_E_QUEUE_FULL);
    CHECK(a, text != NULL && text[0] != '\0');
    CHECK_OK(a, qbus_send_failures(a, NULL, NULL, NULL));
  }

  /* purge drops what is queued and keeps the queue, with its options. */
  CHECK_OK(a, qbus_purge(a, "c.small", &dropped));
  CHECK_EQ(a, dropped, 2);
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(b, QBUS_OK, m, qbus_receive(b, "c.small", 0, 0, &m));
  CHECK_RC(a, QBUS_E_QUEUE_CONFLICT, qbus_declare(a, "c.small", &qo));
  CHECK_OK(a, qbus_send(a, "c.small", "5", 1, &confirmed));
  CHECK_OK(a, qbus_purge(a, "c.small", NULL));
  CHECK_NONE(b, QBUS_OK, m, qbus_receive(b, "c.small", 0, 0, &m));

  /* delete_queue drops the messages and the queue: other options no longer conflict. */
  CHECK_OK(a, qbus_send(a, "c.small", "6", 1, &confirmed));
  CHECK_OK(a, qbus_send(a, "c.small", "7", 1, &confirmed));
  dropped = 99;
  CHECK_OK(a, qbus_delete_queue(a, "c.small", &dropped));
  CHECK_EQ(a, dropped, 2);
  qo.max_messages = 3;
  CHECK_OK(a, qbus_declare(a, "c.small", &qo));
  CHECK_OK(a, qbus_delete_queue(a, "c.small", NULL));
  CHECK_RC(a, QBUS_E_NO_SUCH_QUEUE, qbus_delete_queue(a, "c.small", &dropped));
  CHECK_RC(a, QBUS_E_NO_SUCH_QUEUE, qbus_purge(a, "c.never", &dropped));

  /* The other queue options reach the broker: a durable queue journalled at every send, and
   * a single-active-consumer queue that refuses receives. */
  CHECK_OK(a, qbus_queue_options_init(&qo));
  qo.durable = 1;
  qo.fsync = QBUS_FSYNC_ALWAYS;
  qo.ack_timeout_ms = 30000;
  qo.max_deliveries = 5;
  CHECK_OK(a, qbus_declare(a, "c.durable", &qo));
  qo.max_deliveries = 6;
  CHECK_RC(a, QBUS_E_QUEUE_CONFLICT, qbus_declare(a, "c.durable", &qo));
  CHECK_OK(a, qbus_send(a, "c.durable", "on disk", 7, &confirmed));
  RECEIVE(b, "c.durable", 0, m);
  CHECK_TEXT(b, m, "on disk");
  CHECK_OK(a, qbus_queue_options_init(&qo));
  qo.single_active_consumer = 1;
  CHECK_OK(a, qbus_declare(a, "c.single", &qo));
  CHECK_OK(a, qbus_send(a, "c.single", "x", 1, &confirmed));
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(b, QBUS_E_SINGLE_ACTIVE_CONSUMER, m, qbus_receive(b, "c.single", 0, 0, &m));

  /* message_ids, a field added after QBUS_0: each message carries a qbus-id. */
  CHECK_OK(a, qbus_queue_options_init(&qo));
  qo.message_ids = 1;
  CHECK_OK(a, qbus_declare(a, "c.ids", &qo));
  qo.message_ids = 0;
  CHECK_RC(a, QBUS_E_QUEUE_CONFLICT, qbus_declare(a, "c.ids", &qo));
  CHECK_CONTAINS(a, qbus_last_error(), "message_ids");
  CHECK_OK(a, qbus_send(a, "c.ids", "x", 1, &confirmed));
  RECEIVE(b, "c.ids", 0, m);
  {
    const void* id = NULL;
    size_t id_len = 0;
    CHECK_OK(b, qbus_message_header(m, "qbus-id", &id, &id_len));
    CHECK(b, id != NULL && id_len > 17);
  }
done:
  qbus_message_free(m);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}

/* ---- Batches ----------------------------------------------------------------------------- */

int qbus_ctest_batch(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_message* got[128] = {NULL};
  size_t count = 0;
  int wants = -1;
  char text[8];
  why[0] = '\0';

  CONNECT(a, "c-batcher");
  CONNECT(b, "c-reader");
  CHECK_OK(a, qbus_client_wants_write(a, &wants));
  CHECK_EQ(a, wants, 0);

  /* A batch keeps small sends buffered (far below the chunk it writes); a nested batch's end
   * leaves them so, and the outermost end writes them. */
  CHECK_OK(a, qbus_batch_begin(a));
  for (int i = 0; i < 50; ++i) {
    const int n = snprintf(text, sizeof text, "%d", i);
    CHECK_OK(a, qbus_send(a, "c.batched", text, (size_t)n, NULL));
  }
  CHECK_OK(a, qbus_client_wants_write(a, &wants));
  CHECK_EQ(a, wants, 1);
  CHECK_OK(a, qbus_batch_begin(a));
  for (int i = 50; i < 100; ++i) {
    const int n = snprintf(text, sizeof text, "%d", i);
    CHECK_OK(a, qbus_send(a, "c.batched", text, (size_t)n, NULL));
  }
  CHECK_OK(a, qbus_batch_end(a));
  CHECK_OK(a, qbus_client_wants_write(a, &wants));
  CHECK_EQ(a, wants, 1);
  CHECK_OK(a, qbus_batch_end(a));
  CHECK_OK(a, qbus_client_wants_write(a, &wants));
  CHECK_EQ(a, wants, 0);

  CHECK_OK(a, qbus_sync(a));
  CHECK_EQ(a, failures_of(a), 0);
  CHECK_OK(b, qbus_receive_batch(b, "c.batched", 128, LONG_MS, 0, got, &count));
  CHECK_EQ(b, count, 100);
  for (size_t i = 0; i < count; ++i) {
    const int n = snprintf(text, sizeof text, "%zu", i);
    CHECK_PAYLOAD(b, got[i], text, (size_t)n);
  }
done:
  for (size_t i = 0; i < sizeof got / sizeof got[0]; ++i)
    qbus_message_free(got[i]);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}

/* ---- Acknowledgement mode ---------------------------------------------------------------- */

int qbus_ctest_acks(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_message* first = NULL;
  qbus_message* again = NULL;
  qbus_message* second = NULL;
  qbus_message* m = NULL;
  qbus_message* got[4] = {NULL};
  size_t count = 0;
  qbus_send_options confirmed;
  qbus_queue_options qo;
  qbus_message_info info;
  uint64_t first_tag = 0, again_tag = 0, second_tag = 0;
  why[0] = '\0';

  CONNECT(a, "c-producer");
  CONNECT(b, "c-worker");
  CHECK_OK(a, qbus_send_options_init(&confirmed));
  confirmed.confirm = 1;
  CHECK_OK(a, qbus_send(a, "c.acks", "a", 1, &confirmed));
  CHECK_OK(a, qbus_send(a, "c.acks", "b", 1, &confirmed));

  RECEIVE(b, "c.acks", QBUS_RECEIVE_ACK, first);
  CHECK_TEXT(b, first, "a");
  CHECK_OK(b, info_of(first, &info));
  first_tag = info.delivery_tag;
  CHECK(b, first_tag != 0);
  CHECK_EQ(b, info.delivery_count, 1);
  CHECK_EQ(b, info.redelivered, 0);

  /* Refused locally: an unknown action, and a delay with anything but requeue_after. */
  CHECK_INVALID(b, qbus_nack(b, first, 99, 0, 1));
  CHECK_INVALID(b, qbus_nack(b, first, QBUS_NACK_REQUEUE, 5, 1));

  /* A requeued message is at the head again, marked as handed over before. */
  CHECK_OK(b, qbus_nack(b, first, QBUS_NACK_REQUEUE, 0, 1));
  RECEIVE(b, "c.acks", QBUS_RECEIVE_ACK, again);
  CHECK_TEXT(b, again, "a");
  CHECK_OK(b, info_of(again, &info));
  again_tag = info.delivery_tag;
  CHECK(b, again_tag > first_tag);
  CHECK_EQ(b, info.redelivered, 1);
  CHECK_EQ(b, info.delivery_count, 2);

  RECEIVE(b, "c.acks", QBUS_RECEIVE_ACK, second);
  CHECK_TEXT(b, second, "b");
  CHECK_OK(b, info_of(second, &info));
  second_tag = info.delivery_tag;
  CHECK(b, second_tag > again_tag);
  CHECK_EQ(b, info.redelivered, 0);
  CHECK_OK(b, qbus_extend(b, second, 60000, 1));

  /* Once acked, a tag is unknown to the broker: a confirmed settle of it says so, a
   * pipelined one is counted. */
  CHECK_OK(b, qbus_ack(b, again, 1));
  CHECK_RC(b, QBUS_E_UNKNOWN_DELIVERY, qbus_ack(b, again, 1));
  CHECK_RC(b, QBUS_E_UNKNOWN_DELIVERY, qbus_extend(b, again, 1000, 1));
  CHECK_EQ(b, failures_of(b), 0);
  CHECK_OK(b, qbus_ack(b, again, 0));
  CHECK_OK(b, qbus_sync(b));
  {
    uint64_t n = 0;
    int code = 0;
    CHECK_OK(b, qbus_send_failures(b, &n, &code, NULL));
    CHECK_EQ(b, n, 1);
    CHECK_EQ(b, code, QBUS_E_UNKNOWN_DELIVERY);
  }

  /* ack_up_to settles `second` (the only one left): its own ack is then unknown. */
  CHECK_INVALID(b, qbus_ack_up_to(b, 0, 1));
  CHECK_OK(b, qbus_ack_up_to(b, second_tag, 1));
  CHECK_RC(b, QBUS_E_UNKNOWN_DELIVERY, qbus_ack(b, second, 1));
  CHECK_NONE(b, QBUS_OK, m, qbus_receive(b, "c.acks", 0, QBUS_RECEIVE_ACK, &m));

  /* A message received without acknowledgement mode has nothing to settle. */
  CHECK_OK(a, qbus_send(a, "c.plain", "p", 1, &confirmed));
  RECEIVE(b, "c.plain", 0, m);
  CHECK_INVALID(b, qbus_ack(b, m, 1));
  CHECK_INVALID(b, qbus_nack(b, m, QBUS_NACK_REQUEUE, 0, 1));
  CHECK_INVALID(b, qbus_extend(b, m, 1000, 1));

  /* Dead-lettered, with the broker's reasons in its headers. */
  CHECK_OK(a, qbus_queue_options_init(&qo));
  qo.dead_letter = "c.orders.dead";
  qo.dead_letter_overflow = 1;
  qo.dead_letter_expired = 1;
  CHECK_OK(a, qbus_declare(a, "c.orders", &qo));
  CHECK_OK(a, qbus_send(a, "c.orders", "bad order", 9, &confirmed));
  RECEIVE(b, "c.orders", QBUS_RECEIVE_ACK, m);
  CHECK_OK(b, qbus_nack(b, m, QBUS_NACK_DEAD_LETTER, 0, 1));
  RECEIVE(b, "c.orders.dead", 0, m);
  CHECK_TEXT(b, m, "bad order");
  CHECK_HEADER(b, m, "qbus-dead-reason", "rejected", 8);
  CHECK_HEADER(b, m, "qbus-dead-queue", "c.orders", 8);
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(b, QBUS_OK, m, qbus_receive(b, "c.orders", 0, QBUS_RECEIVE_ACK, &m));

  /* receive_batch in acknowledgement mode: every message has its own, growing tag, and one
   * ack_up_to settles them all. */
  for (int i = 0; i < 3; ++i) {
    const char digit = (char)('0' + i);
    CHECK_OK(a, qbus_send(a, "c.many", &digit, 1, &confirmed));
  }
  CHECK_OK(b, qbus_receive_batch(b, "c.many", 4, LONG_MS, QBUS_RECEIVE_ACK, got, &count));
  CHECK_EQ(b, count, 3);
  {
    uint64_t previous = 0;
    for (size_t i = 0; i < count; ++i) {
      const char digit = (char)('0' + i);
      CHECK_PAYLOAD(b, got[i], &digit, 1);
      CHECK_OK(b, info_of(got[i], &info));
      CHECK(b, info.delivery_tag > previous);
      previous = info.delivery_tag;
    }
    CHECK_OK(b, qbus_ack_up_to(b, previous, 1));
  }
  CHECK_RC(b, QBUS_E_UNKNOWN_DELIVERY, qbus_ack(b, got[0], 1));
  CHECK_NONE(b, QBUS_OK, m, qbus_receive(b, "c.many", 0, QBUS_RECEIVE_ACK, &m));
done:
  for (size_t i = 0; i < sizeof got / sizeof got[0]; ++i)
    qbus_message_free(got[i]);
  qbus_message_free(m);
  qbus_message_free(second);
  qbus_message_free(again);
  qbus_message_free(first);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}

/* ---- Direct messages --------------------------------------------------------------------- */

int qbus_ctest_direct(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_message* m = NULL;
  qbus_session_info sa, sb;
  qbus_direct_options dopt;
  qbus_message_info info;
  const qbus_header trace = {"trace", "t-1", 3};
  uint32_t nobody = 0;
  why[0] = '\0';

  nobody = gone_pid();
  CHECK(NULL, nobody != 0);
  CONNECT(a, "c-first");
  CONNECT(b, "c-second");
  CHECK_OK(a, session_of(a, &sa));
  CHECK_OK(b, session_of(b, &sb));
  CHECK_EQ(a, sa.pid, getpid());
  CHECK_EQ(b, sb.pid, sa.pid);

  /* The inbox is the process's: a message to its own pid waits there, and b, claiming the
   * inbox with its first receive_direct, takes it. */
  CHECK_OK(a, qbus_direct_options_init(&dopt));
  dopt.headers = &trace;
  dopt.header_count = 1;
  CHECK_OK(a, qbus_send_to_pid(a, sa.pid, "one", 3, &dopt));
  RECEIVE_DIRECT(b, m);
  CHECK_TEXT(b, m, "one");
  CHECK_KEY(b, m, "");
  CHECK_HEADER(b, m, "trace", "t-1", 3);
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.is_direct, 1);
  CHECK_EQ(b, info.is_request, 0);
  CHECK_EQ(b, info.sender_pid, getpid());
  CHECK_EQ(b, info.sender_client_id, sa.client_id);
  CHECK_EQ(b, info.header_count, 1);

  /* By client id, with the defaults (options NULL: confirmed); a claims the inbox back. */
  CHECK_OK(b, qbus_send_to_client(b, sa.client_id, "two", 3, NULL));
  RECEIVE_DIRECT(a, m);
  CHECK_TEXT(a, m, "two");
  CHECK_OK(a, info_of(m, &info));
  CHECK_EQ(a, info.is_direct, 1);
  CHECK_EQ(a, info.sender_client_id, sb.client_id);
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(a, QBUS_OK, m, qbus_receive_direct(a, 0, &m));
  CHECK_NONE(a, QBUS_OK, m, qbus_receive_direct(a, SHORT_MS, &m));

  /* Several in one round trip, in order; then none within the timeout. */
  {
    qbus_message* batch[4] = {NULL, NULL, NULL, NULL};
    size_t got = 99;
    CHECK_OK(b, qbus_send_to_pid(b, sa.pid, "d1", 2, NULL));
    CHECK_OK(b, qbus_send_to_pid(b, sa.pid, "d2", 2, NULL));
    CHECK_OK(b, qbus_send_to_pid(b, sa.pid, "d3", 2, NULL));
    rc = qbus_receive_direct_batch(a, 4, LONG_MS, batch, &got);
    if (rc == QBUS_OK && got == 3) {
      rc = payload_differs(batch[0], "d1", 2, why, why_len) ||
           payload_differs(batch[1], "d2", 2, why, why_len) ||
           payload_differs(batch[2], "d3", 2, why, why_len);
    } else if (rc == QBUS_OK) {
      snprintf(why, why_len, "qbus_receive_direct_batch took %zu messages, expected 3", got);
      rc = 1;
    }
    for (size_t i = 0; i < 4; ++i)
      qbus_message_free(batch[i]);
    if (rc != 0) goto done;
    CHECK_OK(a, qbus_receive_direct_batch(a, 4, SHORT_MS, batch, &got));
    CHECK_EQ(a, got, 0);
  }

  /* Confirmed by default: a pid with no connection is refused at once, or after wait_ms. */
  CHECK_RC(a, QBUS_E_NO_SUCH_PEER, qbus_send_to_pid(a, nobody, "anyone?", 7, NULL));
  CHECK_NONEMPTY(a, qbus_client_last_error(a));
  CHECK_OK(a, qbus_direct_options_init(&dopt));
  dopt.wait_ms = SHORT_MS;
  CHECK_RC(a, QBUS_E_NO_SUCH_PEER, qbus_send_to_pid(a, nobody, "anyone?", 7, &dopt));
  CHECK_INVALID(a, qbus_send_to_client(a, 0, "x", 1, NULL));

  /* Pipelined (confirm 0): the refusal is counted. */
  CHECK_EQ(a, failures_of(a), 0);
  CHECK_OK(a, qbus_direct_options_init(&dopt));
  dopt.confirm = 0;
  CHECK_OK(a, qbus_send_to_pid(a, nobody, "anyone?", 7, &dopt));
  CHECK_OK(a, qbus_sync(a));
  {
    uint64_t n = 0;
    int code = 0;
    CHECK_OK(a, qbus_send_failures(a, &n, &code, NULL));
    CHECK_EQ(a, n, 1);
    CHECK_EQ(a, code, QBUS_E_NO_SUCH_PEER);
  }
done:
  qbus_message_free(m);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}

/* ---- Requests and replies ---------------------------------------------------------------- */

/* The responder's side, on a thread of its own since a request blocks its caller. */
struct responder {
  qbus_client* client;
  int rc;
  char why[1024];
};

static int respond_once(qbus_client* c, char* why, size_t why_len) {
  int rc = 0;
  qbus_message* m = NULL;
  qbus_message_info info;

  RECEIVE(c, "c.svc", 0, m);
  CHECK_TEXT(c, m, "ping");
  CHECK_HEADER(c, m, "trace", "t-2", 3);
  CHECK_OK(c, info_of(m, &info));
  CHECK_EQ(c, info.is_request, 1);
  CHECK(c, info.request_id != 0);
  CHECK_OK(c, qbus_reply(c, m, "re:ping", 7));
  CHECK_OK(c, qbus_sync(c));
  CHECK_EQ(c, failures_of(c), 0);
done:
  qbus_message_free(m);
  return rc;
}

static void* respond(void* arg) {
  struct responder* r = arg;
  r->rc = respond_once(r->client, r->why, sizeof r->why);
  return NULL;
}

int qbus_ctest_request_reply(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* requester = NULL;
  struct responder resp;
  pthread_t thread;
  int started = 0;
  qbus_message* reply = NULL;
  qbus_message* m = NULL;
  qbus_session_info sr;
  qbus_message_info info;
  const qbus_header trace = {"trace", "t-2", 3};
  memset(&resp, 0, sizeof resp);
  why[0] = '\0';

  CONNECT(requester, "c-requester");
  CONNECT(resp.client, "c-responder");
  /* Read before the thread starts: from then on the responder's client is the thread's. */
  CHECK_OK(resp.client, session_of(resp.client, &sr));
  CHECK_EQ(NULL, pthread_create(&thread, NULL, respond, &resp), 0);
  started = 1;

  CHECK_OK(requester, qbus_request(requester, "c.svc", "ping", 4, LONG_MS, &trace, 1, &reply));
  if (reply == NULL) FAIL_AT(requester, "no reply within %d ms", LONG_MS);
  CHECK_TEXT(requester, reply, "re:ping");
  CHECK_KEY(requester, reply, "");
  CHECK_OK(requester, info_of(reply, &info));
  CHECK_EQ(requester, info.is_direct, 1);
  CHECK_EQ(requester, info.is_request, 0);
  CHECK_EQ(requester, info.sender_pid, getpid());
  CHECK_EQ(requester, info.sender_client_id, sr.client_id);

  CHECK_EQ(NULL, pthread_join(thread, NULL), 0);
  started = 0;
  if (resp.rc != 0) FAIL_AT(NULL, "responder: %s", resp.why);

  /* Nobody takes it: QBUS_OK and no reply once the timeout passed. */
  qbus_message_free(reply);
  reply = NULL;
  CHECK_NONE(requester, QBUS_OK, reply,
             qbus_request(requester, "c.nobody", "anyone?", 7, SHORT_MS, NULL, 0, &reply));

  /* Only a request can be replied to. */
  CHECK_OK(requester, qbus_send(requester, "c.plain", "x", 1, NULL));
  RECEIVE(resp.client, "c.plain", 0, m);
  CHECK_INVALID(resp.client, qbus_reply(resp.client, m, "no", 2));
done:
  /* The responder gives up by itself within LONG_MS when no request came. */
  if (started) pthread_join(thread, NULL);
  qbus_message_free(m);
  qbus_message_free(reply);
  qbus_client_free(resp.client);
  qbus_client_free(requester);
  return rc;
}
