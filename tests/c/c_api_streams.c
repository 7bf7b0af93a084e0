/* The C API from C11 against the real qbusd (c_api_test.cpp starts a daemon per case):
 * Subscriptions, subjects, the event loop, regions and shared regions. */
#include "c_api_cases.h"
#include "c_check.h"

/* ---- Queue subscriptions ----------------------------------------------------------------- */

int qbus_ctest_queue_subscription(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_subscription* sub = NULL;
  qbus_subscription* plain = NULL;
  qbus_message* m = NULL;
  qbus_subscribe_options subo;
  qbus_send_options confirmed;
  qbus_message_info info;
  size_t pending = 99;
  int active = -1;
  why[0] = '\0';

  CONNECT(a, "c-producer");
  CONNECT(b, "c-subscriber");
  CHECK_OK(a, qbus_send_options_init(&confirmed));
  confirmed.confirm = 1;
  CHECK_OK(a, qbus_send(a, "c.feed", "m1", 2, &confirmed));
  CHECK_OK(a, qbus_send(a, "c.feed", "m2", 2, &confirmed));
  CHECK_OK(a, qbus_send(a, "c.feed", "m3", 2, &confirmed));

  CHECK_OK(b, qbus_subscribe_options_init(&subo));
  subo.prefetch = 1;
  CHECK_OK(b, qbus_subscribe(b, "c.feed", &subo, &sub));
  CHECK(b, sub != NULL);
  CHECK_OK(b, qbus_subscription_active(sub, &active));
  CHECK_EQ(b, active, 1);

  NEXT(b, sub, m);
  CHECK_TEXT(b, m, "m1");
  CHECK_KEY(b, m, "c.feed");
  CHECK_OK(b, info_of(m, &info));
  CHECK(b, info.delivery_tag != 0);
  CHECK_EQ(b, info.delivery_count, 1);
  /* Prefetch 1: with m1 unsettled the broker pushes nothing more, so the round trip of a
   * sync brings nothing for the subscription. */
  CHECK_OK(b, qbus_sync(b));
  CHECK_OK(b, qbus_subscription_pending(sub, &pending));
  CHECK_EQ(b, pending, 0);
  CHECK_OK(b, qbus_ack(b, m, 1));

  /* Given back, m2 comes again before m3. */
  NEXT(b, sub, m);
  CHECK_TEXT(b, m, "m2");
  CHECK_OK(b, qbus_nack(b, m, QBUS_NACK_REQUEUE, 0, 1));
  NEXT(b, sub, m);
  CHECK_TEXT(b, m, "m2");
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.redelivered, 1);
  CHECK_EQ(b, info.delivery_count, 2);
  CHECK_OK(b, qbus_ack(b, m, 0));
  NEXT(b, sub, m);
  CHECK_TEXT(b, m, "m3");
  CHECK_OK(b, qbus_ack(b, m, 0));

  /* Cancelled: inactive, and next() has nothing more, without waiting for it. */
  CHECK_OK(b, qbus_subscription_cancel(sub));
  CHECK_OK(b, qbus_subscription_active(sub, &active));
  CHECK_EQ(b, active, 0);
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(b, QBUS_OK, m, qbus_subscription_next(sub, LONG_MS, &m));
  CHECK_OK(b, qbus_subscription_cancel(sub));
  CHECK_OK(b, qbus_sync(b));
  CHECK_EQ(b, failures_of(b), 0);

  /* Without acknowledgements: nothing to settle. */
  CHECK_OK(b, qbus_subscribe_options_init(&subo));
  subo.ack = 0;
  CHECK_OK(b, qbus_subscribe(b, "c.unacked", &subo, &plain));
  CHECK_OK(a, qbus_send(a, "c.unacked", "p", 1, &confirmed));
  NEXT(b, plain, m);
  CHECK_TEXT(b, m, "p");
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.delivery_tag, 0);
done:
  qbus_message_free(m);
  qbus_subscription_free(plain);
  qbus_subscription_free(sub);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}

/* ---- Subjects ---------------------------------------------------------------------------- */

int qbus_ctest_subjects(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_subscription* temps = NULL;
  qbus_subscription* all = NULL;
  qbus_subscription* cfg = NULL;
  qbus_subscription* w1 = NULL;
  qbus_subscription* w2 = NULL;
  qbus_subscription* bad = NULL;
  qbus_message* m = NULL;
  qbus_subject_options sjo;
  qbus_publish_options po;
  qbus_message_info info;
  size_t pending = 99, pending2 = 99;
  int active = -1;
  const qbus_header unit = {"unit", "C", 1};
  why[0] = '\0';

  CONNECT(a, "c-publisher");
  CONNECT(b, "c-subscriber");
  CHECK_OK(b, qbus_subscribe_subject(b, "c.s.*.temp", NULL, &temps));
  CHECK_OK(b, qbus_subject_options_init(&sjo));
  sjo.max_messages = 100;
  sjo.slow = QBUS_SLOW_DROP_OLDEST;
  CHECK_OK(b, qbus_subscribe_subject(b, "c.s.>", &sjo, &all));
  CHECK_OK(b, qbus_subscription_active(temps, &active));
  CHECK_EQ(b, active, 1);

  /* Confirmed: every matching subscription has it when publish returns. */
  CHECK_OK(a, qbus_publish_options_init(&po));
  po.confirm = 1;
  po.headers = &unit;
  po.header_count = 1;
  CHECK_OK(a, qbus_publish(a, "c.s.kitchen.temp", "21.5", 4, &po));
  po.headers = NULL;
  po.header_count = 0;
  CHECK_OK(a, qbus_publish(a, "c.s.hall.humidity", "40", 2, &po));
  CHECK_OK(a, qbus_publish(a, "c.s.a.b.temp", "7", 1, &po));
  CHECK_OK(a, qbus_publish(a, "c.s", "none", 4, &po));
  CHECK_OK(a, qbus_publish(a, "c.other", "none", 4, &po));

  /* b's sync reads what arrived and keeps it for the subscriptions. */
  CHECK_OK(b, qbus_sync(b));
  CHECK_OK(b, qbus_subscription_pending(temps, &pending));
  CHECK_EQ(b, pending, 1);
  CHECK_OK(b, qbus_subscription_pending(all, &pending));
  CHECK_EQ(b, pending, 3);

  /* Kept deliveries come without waiting, so QBUS_FOREVER cannot hang here. */
  CHECK_OK(b, qbus_subscription_next(temps, QBUS_FOREVER, &m));
  CHECK(b, m != NULL);
  CHECK_KEY(b, m, "c.s.kitchen.temp");
  CHECK_TEXT(b, m, "21.5");
  CHECK_HEADER(b, m, "unit", "C", 1);
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.retained, 0);
  CHECK_EQ(b, info.dropped_before, 0);
  CHECK_EQ(b, info.delivery_tag, 0);
  CHECK_EQ(b, info.is_direct, 0);
  CHECK_EQ(b, info.sender_pid, getpid());
  CHECK_OK(b, qbus_subscription_pending(temps, &pending));
  CHECK_EQ(b, pending, 0);
  NEXT(b, all, m);
  CHECK_KEY(b, m, "c.s.kitchen.temp");
  NEXT(b, all, m);
  CHECK_KEY(b, m, "c.s.hall.humidity");
  CHECK_TEXT(b, m, "40");
  NEXT(b, all, m);
  CHECK_KEY(b, m, "c.s.a.b.temp");
  CHECK_TEXT(b, m, "7");

  /* The broker answers a cancel after every delivery it made before, all of them confirmed
   * publishes above: nothing more means nothing else matched. */
  CHECK_OK(b, qbus_subscription_cancel(temps));
  CHECK_OK(b, qbus_subscription_active(temps, &active));
  CHECK_EQ(b, active, 0);
  CHECK_OK(b, qbus_subscription_cancel(all));
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(b, QBUS_OK, m, qbus_subscription_next(temps, 0, &m));
  CHECK_NONE(b, QBUS_OK, m, qbus_subscription_next(all, 0, &m));

  /* A pipelined publish that nothing matches is no failure. */
  CHECK_OK(a, qbus_publish(a, "c.nobody.listens", "void", 4, NULL));
  CHECK_OK(a, qbus_sync(a));
  CHECK_EQ(a, failures_of(a), 0);

  /* A retained message reaches a later subscription first, marked as such. */
  CHECK_OK(a, qbus_publish_options_init(&po));
  po.retain = 1;
  po.confirm = 1;
  CHECK_OK(a, qbus_publish(a, "c.cfg.colour", "blue", 4, &po));
  CHECK_OK(b, qbus_subscribe_subject(b, "c.cfg.>", NULL, &cfg));
  NEXT(b, cfg, m);
  CHECK_KEY(b, m, "c.cfg.colour");
  CHECK_TEXT(b, m, "blue");
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.retained, 1);
  po.retain = 0;
  CHECK_OK(a, qbus_publish(a, "c.cfg.colour", "red", 3, &po));
  NEXT(b, cfg, m);
  CHECK_TEXT(b, m, "red");
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.retained, 0);

  /* A queue group hands each message to one member, in turn. */
  CHECK_OK(b, qbus_subject_options_init(&sjo));
  sjo.group = "c-workers";
  CHECK_OK(b, qbus_subscribe_subject(b, "c.work.>", &sjo, &w1));
  CHECK_OK(b, qbus_subscribe_subject(b, "c.work.>", &sjo, &w2));
  CHECK_OK(a, qbus_publish(a, "c.work.a", "1", 1, &po));
  CHECK_OK(a, qbus_publish(a, "c.work.b", "2", 1, &po));
  CHECK_OK(b, qbus_sync(b));
  CHECK_OK(b, qbus_subscription_pending(w1, &pending));
  CHECK_OK(b, qbus_subscription_pending(w2, &pending2));
  CHECK_EQ(b, pending, 1);
  CHECK_EQ(b, pending2, 1);

  /* Subjects and patterns are checked before anything is sent. */
  CHECK_RC(a, QBUS_E_INVALID_SUBJECT, qbus_publish(a, "c..s", "x", 1, &po));
  CHECK_NONE(b, QBUS_E_INVALID_SUBJECT, bad, qbus_subscribe_subject(b, "c.>.s", NULL, &bad));
  CHECK_NONE(b, QBUS_E_INVALID_SUBJECT, bad, qbus_subscribe_subject(b, "c..s", NULL, &bad));
done:
  qbus_message_free(m);
  qbus_subscription_free(bad);
  qbus_subscription_free(w2);
  qbus_subscription_free(w1);
  qbus_subscription_free(cfg);
  qbus_subscription_free(all);
  qbus_subscription_free(temps);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}

/* ---- Event loop -------------------------------------------------------------------------- */

int qbus_ctest_event_loop(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_subscription* sub = NULL;
  qbus_message* m = NULL;
  qbus_publish_options po;
  struct stat st;
  size_t pending = 99;
  int fd = -1;
  int wants = -1;
  why[0] = '\0';

  CONNECT(a, "c-publisher");
  CONNECT(b, "c-looper");
  CHECK_OK(b, qbus_client_fd(b, &fd));
  CHECK(b, fd >= 0);
  CHECK(b, fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode));
  CHECK_OK(b, qbus_subscribe_subject(b, "c.loop.>", NULL, &sub));
  CHECK_OK(b, qbus_client_wants_write(b, &wants));
  CHECK_EQ(b, wants, 0);
  /* Nothing has arrived: process() returns at once with nothing filed. */
  CHECK_OK(b, qbus_client_process(b));
  CHECK_OK(b, qbus_subscription_pending(sub, &pending));
  CHECK_EQ(b, pending, 0);

  CHECK_OK(a, qbus_publish_options_init(&po));
  po.confirm = 1;
  CHECK_OK(a, qbus_publish(a, "c.loop.tick", "tick", 4, &po));

  /* What a loop does: wait for readability, process, drain. A frame may come in pieces, so
   * readiness is waited for again until the delivery is whole. */
  for (int rounds = 0; m == NULL; ++rounds) {
    struct pollfd p = {fd, POLLIN, 0};
    if (rounds == 1000) FAIL_AT(b, "still no delivery after %d readable rounds", rounds);
    const int ready = poll(&p, 1, LONG_MS);
    if (ready != 1) {
      FAIL_AT(b, "poll gave %d (revents 0x%x) waiting %d ms for the delivery", ready,
              (unsigned)p.revents, LONG_MS);
    }
    CHECK_OK(b, qbus_client_process(b));
    CHECK_OK(b, qbus_subscription_next(sub, 0, &m));
  }
  CHECK_KEY(b, m, "c.loop.tick");
  CHECK_TEXT(b, m, "tick");
  qbus_message_free(m);
  m = NULL;
  CHECK_NONE(b, QBUS_OK, m, qbus_subscription_next(sub, 0, &m));
  CHECK_OK(b, qbus_client_wants_write(b, &wants));
  CHECK_EQ(b, wants, 0);

  /* A delivery that another call read is kept without making the fd readable again: drain
   * after every call. */
  CHECK_OK(a, qbus_publish(a, "c.loop.tock", "tock", 4, &po));
  CHECK_OK(b, qbus_sync(b));
  {
    struct pollfd p = {fd, POLLIN, 0};
    CHECK_EQ(b, poll(&p, 1, 0), 0);
  }
  CHECK_OK(b, qbus_subscription_pending(sub, &pending));
  CHECK_EQ(b, pending, 1);
  CHECK_OK(b, qbus_subscription_next(sub, 0, &m));
  CHECK(b, m != NULL);
  CHECK_TEXT(b, m, "tock");

  /* Output a batch holds is waiting to be written; process() writes it. */
  CHECK_OK(b, qbus_batch_begin(b));
  CHECK_OK(b, qbus_send(b, "c.loop.queue", "out", 3, NULL));
  CHECK_OK(b, qbus_client_wants_write(b, &wants));
  CHECK_EQ(b, wants, 1);
  CHECK_OK(b, qbus_client_process(b));
  CHECK_OK(b, qbus_client_wants_write(b, &wants));
  CHECK_EQ(b, wants, 0);
  CHECK_OK(b, qbus_batch_end(b));
  RECEIVE(a, "c.loop.queue", 0, m);
  CHECK_TEXT(a, m, "out");
done:
  qbus_message_free(m);
  qbus_subscription_free(sub);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}

/* ---- Regions ----------------------------------------------------------------------------- */

int qbus_ctest_regions(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_client* low = NULL;
  qbus_region* r = NULL;
  qbus_region* refused = NULL;
  qbus_subscription* sub = NULL;
  qbus_message* m = NULL;
  qbus_message* got[3] = {NULL};
  unsigned char* pattern = NULL;
  size_t count = 0;
  qbus_send_options so;
  qbus_publish_options po;
  qbus_message_info info;
  qbus_session_info sa;
  const qbus_header kind = {"kind", "bulk", 4};
  void* data = NULL;
  size_t size = 0;
  uint64_t id = 0;
  int sealed = -1;
  why[0] = '\0';

  CONNECT(a, "c-writer");
  CONNECT(b, "c-reader");
  CHECK_OK(a, session_of(a, &sa));

  /* Whole: written in place, sent sealed and given up; the receiver maps the same bytes. */
  pattern = make_pattern(3 * 4096, 1);
  CHECK(NULL, pattern != NULL);
  CHECK_OK(a, qbus_region_allocate(a, 3 * 4096, &r));
  CHECK(a, r != NULL);
  CHECK_OK(a, qbus_region_data(r, &data, &size));
  CHECK(a, data != NULL);
  CHECK_EQ(a, size, 3 * 4096);
  CHECK_OK(a, qbus_region_info(r, &id, &sealed));
  CHECK(a, id != 0);
  CHECK_EQ(a, sealed, 0);
  CHECK_OK(a, qbus_region_info(r, NULL, NULL));
  memcpy(data, pattern, size);
  CHECK_OK(a, qbus_send_options_init(&so));
  so.headers = &kind;
  so.header_count = 1;
  so.confirm = 1;
  CHECK_OK(a, qbus_send_region(a, "c.bulk", r, &so));
  CHECK_OK(a, qbus_region_data(r, &data, &size));
  CHECK(a, data == NULL);
  CHECK_EQ(a, size, 0);
  CHECK_OK(a, qbus_region_info(r, &id, &sealed));
  CHECK_EQ(a, id, 0);
  CHECK_EQ(a, sealed, 1);
  CHECK_INVALID(a, qbus_send_region(a, "c.bulk", r, NULL));
  qbus_region_free(r);
  r = NULL;
  RECEIVE(b, "c.bulk", 0, m);
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.in_shared_memory, 1);
  CHECK_PAYLOAD(b, m, pattern, 3 * 4096);
  CHECK_HEADER(b, m, "kind", "bulk", 4);

  /* Slices: each its own message; the region stays the sender's (sealed at the first). */
  CHECK_OK(a, qbus_region_allocate(a, 2 * 4096, &r));
  CHECK_OK(a, qbus_region_data(r, &data, &size));
  CHECK(a, data != NULL && size == 2 * 4096);
  memcpy((char*)data + 100, "first slice", 11);
  memcpy((char*)data + 4196, "second, longer slice", 20);
  CHECK_INVALID(a, qbus_send_region_slice(a, "c.slices", r, 8000, 500));
  CHECK_OK(a, qbus_send_region_slice(a, "c.slices", r, 100, 11));
  CHECK_OK(a, qbus_send_region_slice(a, "c.slices", r, 4196, 20));
  CHECK_OK(a, qbus_region_data(r, &data, &size));
  CHECK(a, data == NULL);
  CHECK_OK(a, qbus_region_info(r, &id, &sealed));
  CHECK(a, id != 0);
  CHECK_EQ(a, sealed, 1);
  CHECK_OK(a, qbus_sync(a));
  CHECK_EQ(a, failures_of(a), 0);
  CHECK_OK(b, qbus_receive_batch(b, "c.slices", 3, LONG_MS, 0, got, &count));
  CHECK_EQ(b, count, 2);
  CHECK_TEXT(b, got[0], "first slice");
  CHECK_TEXT(b, got[1], "second, longer slice");
  CHECK_OK(b, info_of(got[1], &info));
  CHECK_EQ(b, info.in_shared_memory, 1);
  qbus_region_free(r);
  r = NULL;

  /* To a pid: the process's inbox, taken by b. */
  free(pattern);
  pattern = make_pattern(100000, 5);
  CHECK(NULL, pattern != NULL);
  CHECK_OK(a, qbus_region_allocate(a, 100000, &r));
  CHECK_OK(a, qbus_region_data(r, &data, &size));
  CHECK(a, data != NULL && size == 100000);
  memcpy(data, pattern, size);
  CHECK_OK(a, qbus_send_region_to_pid(a, sa.pid, r, NULL));
  qbus_region_free(r);
  r = NULL;
  RECEIVE_DIRECT(b, m);
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.is_direct, 1);
  CHECK_EQ(b, info.in_shared_memory, 1);
  CHECK_PAYLOAD(b, m, pattern, 100000);

  /* Published: mapped by the subscriber. A region cannot be retained. */
  CHECK_OK(b, qbus_subscribe_subject(b, "c.frames.>", NULL, &sub));
  CHECK_OK(a, qbus_publish_options_init(&po));
  po.retain = 1;
  CHECK_OK(a, qbus_region_allocate(a, 4096, &refused));
  CHECK_INVALID(a, qbus_publish_region(a, "c.frames.kept", refused, &po));
  qbus_region_free(refused);
  refused = NULL;
  po.retain = 0;
  po.confirm = 1;
  CHECK_OK(a, qbus_region_allocate(a, 4096, &r));
  CHECK_OK(a, qbus_region_data(r, &data, &size));
  CHECK(a, data != NULL && size == 4096);
  memcpy(data, pattern, size);
  CHECK_OK(a, qbus_publish_region(a, "c.frames.one", r, &po));
  CHECK_OK(a, qbus_region_data(r, &data, &size));
  CHECK(a, data == NULL);
  NEXT(b, sub, m);
  CHECK_KEY(b, m, "c.frames.one");
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.in_shared_memory, 1);
  CHECK_PAYLOAD(b, m, pattern, 4096);

  /* A payload from memory goes through a region above the client's region_threshold. */
  CHECK_OK(a, qbus_send(a, "c.auto", pattern, 2000, NULL));
  RECEIVE(b, "c.auto", 0, m);
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.in_shared_memory, 0);
  CHECK_PAYLOAD(b, m, pattern, 2000);
  CHECK_OK(NULL, connect_with(address, "c-low-threshold", 1024, &low));
  CHECK_OK(low, qbus_send(low, "c.auto", pattern, 2000, NULL));
  CHECK_OK(low, qbus_send(low, "c.auto", pattern, 1000, NULL));
  RECEIVE(b, "c.auto", 0, m);
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.in_shared_memory, 1);
  CHECK_PAYLOAD(b, m, pattern, 2000);
  RECEIVE(b, "c.auto", 0, m);
  CHECK_OK(b, info_of(m, &info));
  CHECK_EQ(b, info.in_shared_memory, 0);
  CHECK_PAYLOAD(b, m, pattern, 1000);
done:
  for (size_t i = 0; i < sizeof got / sizeof got[0]; ++i)
    qbus_message_free(got[i]);
  qbus_message_free(m);
  qbus_subscription_free(sub);
  qbus_region_free(refused);
  qbus_region_free(r);
  qbus_client_free(low);
  qbus_client_free(b);
  qbus_client_free(a);
  free(pattern);
  return rc;
}

/* ---- Shared regions ---------------------------------------------------------------------- */

int qbus_ctest_shared_regions(const char* address, char* why, size_t why_len) {
  int rc = 0;
  qbus_client* a = NULL;
  qbus_client* b = NULL;
  qbus_shared_region* created = NULL;
  qbus_shared_region* reader = NULL;
  qbus_shared_region* writer = NULL;
  qbus_shared_region* none = NULL;
  void* data = NULL;
  const void* bytes = NULL;
  size_t size = 0;
  const long page = sysconf(_SC_PAGESIZE);
  why[0] = '\0';

  CONNECT(a, "c-creator");
  CONNECT(b, "c-attacher");
  CHECK(NULL, page > 0);
  CHECK_OK(a, qbus_shared_region_create(a, "c.area", 4096, 0644, &created));
  CHECK(a, created != NULL);
  CHECK_OK(a, qbus_shared_region_data(created, &data, &size));
  CHECK(a, data != NULL);
  CHECK_EQ(a, size, 4096);
  CHECK_EQ(a, (uintptr_t)data % (uintptr_t)page, 0);
  CHECK_NONE(a, QBUS_E_QUEUE_CONFLICT, none,
             qbus_shared_region_create(a, "c.area", 4096, 0600, &none));

  /* Read-only: no writable bytes, but the same pages, without any message. */
  CHECK_OK(b, qbus_shared_region_attach(b, "c.area", 0, &reader));
  CHECK(b, reader != NULL);
  {
    void* writable = &size;
    size_t n = 0;
    CHECK_OK(b, qbus_shared_region_data(reader, &writable, &n));
    CHECK(b, writable == NULL);
  }
  memcpy(data, "live", 4);
  CHECK_OK(b, qbus_shared_region_bytes(reader, &bytes, &size));
  CHECK_EQ(b, size, 4096);
  CHECK(b, bytes != NULL && memcmp(bytes, "live", 4) == 0);

  CHECK_OK(b, qbus_shared_region_attach(b, "c.area", 1, &writer));
  CHECK_OK(b, qbus_shared_region_data(writer, &data, &size));
  CHECK(b, data != NULL && size == 4096);
  memcpy(data, "both", 4);
  CHECK_OK(a, qbus_shared_region_bytes(created, &bytes, &size));
  CHECK(a, bytes != NULL && memcmp(bytes, "both", 4) == 0);

  CHECK_NONE(b, QBUS_E_NO_SUCH_REGION, none, qbus_shared_region_attach(b, "c.nowhere", 1, &none));
  /* Removing the key keeps the memory for those who hold it. */
  CHECK_OK(a, qbus_shared_region_remove(a, "c.area"));
  CHECK_NONE(b, QBUS_E_NO_SUCH_REGION, none, qbus_shared_region_attach(b, "c.area", 0, &none));
  CHECK_OK(b, qbus_shared_region_bytes(reader, &bytes, &size));
  CHECK(b, bytes != NULL && memcmp(bytes, "both", 4) == 0);
done:
  qbus_shared_region_free(none);
  qbus_shared_region_free(writer);
  qbus_shared_region_free(reader);
  qbus_shared_region_free(created);
  qbus_client_free(b);
  qbus_client_free(a);
  return rc;
}
