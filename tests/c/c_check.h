/* The checks and helpers the C API's cases share (c_api_queues.c, c_api_streams.c,
 * c_api_errors.c; defined in c_check.c).
 *
 * Each case declares every handle it makes at its top, NULL, and frees them all after its
 * `done:` label, which every failed check jumps to: ASan's leak check runs these, so a
 * failure must not leak either. Tests synchronise on answers (a confirmed send or publish,
 * qbus_sync, a subscription the broker has answered), never on sleeps; a short timeout
 * appears only where the check is that nothing comes. The target defines
 * _POSIX_C_SOURCE (poll, fork, pthreads). */
#ifndef QBUS_TESTS_C_CHECK_H
#define QBUS_TESTS_C_CHECK_H

#include <qbus/qbus.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* For what must arrive. */
#define LONG_MS 10000
/* For what must not arrive: long enough for a reply the broker is about to send. */
#define SHORT_MS 200

/* ---- Checks ------------------------------------------------------------------------------ */

void fail_at(char* why, size_t why_len, const char* file, int line, const qbus_client* who,
             const char* format, ...) __attribute__((format(printf, 6, 7)));

/* The checks below need `why`, `why_len`, `rc` and a `done:` label in the function: a failed
 * check records itself and jumps to the cleanup. `client` is whose last error to show
 * (NULL: none). */
#define FAIL_AT(client, ...)                                          \
  do {                                                                \
    fail_at(why, why_len, __FILE__, __LINE__, (client), __VA_ARGS__); \
    rc = 1;                                                           \
    goto done;                                                        \
  } while (0)

#define CHECK(client, cond)                                  \
  do {                                                       \
    if (!(cond)) FAIL_AT(client, "check failed: %s", #cond); \
  } while (0)

#define CHECK_RC(client, want, call)                                           \
  do {                                                                         \
    const int rc_got_ = (call);                                                \
    if (rc_got_ != (want)) {                                                   \
      FAIL_AT(client, "%s returned %d (%s), expected %d (%s)", #call, rc_got_, \
              qbus_strerror(rc_got_), (int)(want), qbus_strerror(want));       \
    }                                                                          \
  } while (0)

#define CHECK_OK(client, call) CHECK_RC(client, QBUS_OK, call)
#define CHECK_INVALID(client, call) CHECK_RC(client, QBUS_E_INVALID_ARGUMENT, call)

#define CHECK_EQ(client, got, want)                                                      \
  do {                                                                                   \
    const long long eq_got_ = (long long)(got);                                          \
    const long long eq_want_ = (long long)(want);                                        \
    if (eq_got_ != eq_want_) {                                                           \
      FAIL_AT(client, "%s is %lld, expected %s (%lld)", #got, eq_got_, #want, eq_want_); \
    }                                                                                    \
  } while (0)

#define CHECK_STR(client, got, want)                                               \
  do {                                                                             \
    const char* str_got_ = (got);                                                  \
    const char* str_want_ = (want);                                                \
    if (str_got_ == NULL || strcmp(str_got_, str_want_) != 0) {                    \
      FAIL_AT(client, "%s is %s%s%s, expected \"%s\"", #got, str_got_ ? "\"" : "", \
              str_got_ ? str_got_ : "NULL", str_got_ ? "\"" : "", str_want_);      \
    }                                                                              \
  } while (0)

#define CHECK_CONTAINS(client, text, needle)                                                     \
  do {                                                                                           \
    const char* hay_ = (text);                                                                   \
    if (hay_ == NULL || strstr(hay_, (needle)) == NULL) {                                        \
      FAIL_AT(client, "%s (%s) does not contain \"%s\"", #text, hay_ ? hay_ : "NULL", (needle)); \
    }                                                                                            \
  } while (0)

#define CHECK_NONEMPTY(client, text)                                    \
  do {                                                                  \
    const char* nonempty_ = (text);                                     \
    if (nonempty_ == NULL || nonempty_[0] == '\0') {                    \
      FAIL_AT(client, "%s is %s", #text, nonempty_ ? "empty" : "NULL"); \
    }                                                                   \
  } while (0)

#define CHECK_PAYLOAD(client, m, want, want_len)                         \
  do {                                                                   \
    char diff_[256];                                                     \
    if (payload_differs((m), (want), (want_len), diff_, sizeof diff_)) { \
      FAIL_AT(client, "payload of %s: %s", #m, diff_);                   \
    }                                                                    \
  } while (0)

#define CHECK_TEXT(client, m, text) CHECK_PAYLOAD(client, m, text, strlen(text))

#define CHECK_KEY(client, m, want)                  \
  do {                                              \
    const char* key_ = NULL;                        \
    CHECK_OK(client, qbus_message_key((m), &key_)); \
    CHECK_STR(client, key_, want);                  \
  } while (0)

#define CHECK_HEADER(client, m, name, want, want_len)                                             \
  do {                                                                                            \
    const void* hv_ = NULL;                                                                       \
    size_t hl_ = 0;                                                                               \
    CHECK_OK(client, qbus_message_header((m), (name), &hv_, &hl_));                               \
    if (hv_ == NULL) FAIL_AT(client, "%s has no header \"%s\"", #m, (name));                      \
    if (hl_ != (size_t)(want_len) || memcmp(hv_, (want), hl_) != 0) {                             \
      FAIL_AT(client, "header \"%s\" of %s is %zu bytes \"%.*s\", expected %zu", (name), #m, hl_, \
              shown(hl_), (const char*)hv_, (size_t)(want_len));                                  \
    }                                                                                             \
  } while (0)

/* What out parameters point to before a call that must set them to NULL (CHECK_NONE). Never
 * passed as a handle. */
extern max_align_t not_a_handle;

/* `call` must return `want` and set `var` (a handle variable the cleanup frees, NULL before)
 * to NULL: it starts as the address of `not_a_handle`, so that leaving it unset shows. */
#define CHECK_NONE(client, want, var, call)                                                  \
  do {                                                                                       \
    if ((var) != NULL) FAIL_AT(client, "CHECK_NONE needs %s NULL before the call", #var);    \
    (var) = (void*)&not_a_handle;                                                            \
    const int none_rc_ = (call);                                                             \
    const int none_left_ = (void*)(var) == (void*)&not_a_handle;                             \
    if (none_left_) (var) = NULL;                                                            \
    if (none_rc_ != (want)) {                                                                \
      FAIL_AT(client, "%s returned %d (%s), expected %d (%s)", #call, none_rc_,              \
              qbus_strerror(none_rc_), (int)(want), qbus_strerror(want));                    \
    }                                                                                        \
    if (none_left_) FAIL_AT(client, "%s left %s unchanged, expected NULL", #call, #var);     \
    if ((var) != NULL) FAIL_AT(client, "%s set %s to a handle, expected NULL", #call, #var); \
  } while (0)

/* Takes the next message into `m` (freeing what it held), which must come within LONG_MS. */
#define RECEIVE(client, key, flags, m)                                                      \
  do {                                                                                      \
    qbus_message_free(m);                                                                   \
    (m) = NULL;                                                                             \
    CHECK_OK(client, qbus_receive((client), (key), LONG_MS, (flags), &(m)));                \
    if ((m) == NULL) FAIL_AT(client, "nothing arrived in %s within %d ms", (key), LONG_MS); \
  } while (0)

#define RECEIVE_DIRECT(client, m)                                                \
  do {                                                                           \
    qbus_message_free(m);                                                        \
    (m) = NULL;                                                                  \
    CHECK_OK(client, qbus_receive_direct((client), LONG_MS, &(m)));              \
    if ((m) == NULL) FAIL_AT(client, "no direct message within %d ms", LONG_MS); \
  } while (0)

#define NEXT(client, sub, m)                                                              \
  do {                                                                                    \
    qbus_message_free(m);                                                                 \
    (m) = NULL;                                                                           \
    CHECK_OK(client, qbus_subscription_next((sub), LONG_MS, &(m)));                       \
    if ((m) == NULL) FAIL_AT(client, "%s delivered nothing within %d ms", #sub, LONG_MS); \
  } while (0)

/* ---- Helpers ----------------------------------------------------------------------------- */

#define CONNECT(var, name)                                    \
  do {                                                        \
    CHECK_OK(NULL, connect_with(address, (name), 0, &(var))); \
    CHECK(NULL, (var) != NULL);                               \
  } while (0)

/* How much of a payload a failure shows. */
int shown(size_t len);
/* 0 when `m`'s payload is exactly `want`; otherwise 1 and the difference in `diff`. */
int payload_differs(const qbus_message* m, const void* want, size_t want_len, char* diff,
                    size_t diff_len);
int connect_with(const char* address, const char* name, size_t region_threshold, qbus_client** out);
int info_of(const qbus_message* m, qbus_message_info* info);
int session_of(const qbus_client* c, qbus_session_info* info);
/* Sends failed so far by `c` (pipelined sends, settles and publishes), or -1 on an error. */
long long failures_of(const qbus_client* c);
/* `len` bytes of a pattern that depends on the position and on `seed`, so that a byte out of
 * place or from another payload shows; the caller frees it. */
unsigned char* make_pattern(size_t len, unsigned seed);
/* The pid of a process that has exited (and so has no connection); 0 when fork failed. */
uint32_t gone_pid(void);
/* The address of a socket that does not exist, beside the daemon's. */
int missing_socket(const char* address, char* out, size_t out_len);

#endif
