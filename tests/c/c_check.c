/* The helpers of c_check.h. */
#include "c_check.h"

max_align_t not_a_handle;

static const char* base_name(const char* path) {
  const char* slash = strrchr(path, '/');
  return slash != NULL ? slash + 1 : path;
}

void fail_at(char* why, size_t why_len, const char* file, int line, const qbus_client* who,
             const char* format, ...) {
  char what[768];
  va_list args;
  va_start(args, format);
  vsnprintf(what, sizeof what, format, args);
  va_end(args);
  if (why == NULL || why_len == 0) return;
  const char* client_error = who != NULL ? qbus_client_last_error(who) : NULL;
  snprintf(why, why_len, "%s:%d: %s; qbus_last_error: \"%s\"; qbus_client_last_error: %s%s%s",
           base_name(file), line, what, qbus_last_error(), client_error != NULL ? "\"" : "",
           who != NULL ? (client_error != NULL ? client_error : "NULL") : "(no client)",
           client_error != NULL ? "\"" : "");
}

/* How much of a payload a failure shows. */
int shown(size_t len) {
  return len < 48 ? (int)len : 48;
}

/* 0 when `m`'s payload is exactly `want`; otherwise 1 and the difference in `diff`. */
int payload_differs(const qbus_message* m, const void* want, size_t want_len, char* diff,
                    size_t diff_len) {
  const void* data = NULL;
  size_t len = 0;
  const int code = qbus_message_payload(m, &data, &len);
  if (code != QBUS_OK) {
    snprintf(diff, diff_len, "qbus_message_payload returned %d (%s)", code, qbus_strerror(code));
    return 1;
  }
  if (len > 0 && data == NULL) {
    snprintf(diff, diff_len, "%zu bytes at NULL", len);
    return 1;
  }
  const unsigned char* got = data;
  const unsigned char* expected = want;
  if (len != want_len) {
    snprintf(diff, diff_len, "%zu bytes \"%.*s\", expected %zu \"%.*s\"", len, shown(len),
             got != NULL ? (const char*)got : "", want_len, shown(want_len), (const char*)expected);
    return 1;
  }
  for (size_t i = 0; i < len; ++i) {
    if (got[i] != expected[i]) {
      snprintf(diff, diff_len, "byte %zu of %zu is 0x%02x, expected 0x%02x", i, len, got[i],
               expected[i]);
      return 1;
    }
  }
  return 0;
}

/* ---- Helpers ----------------------------------------------------------------------------- */
int connect_with(const char* address, const char* name, size_t region_threshold,
                 qbus_client** out) {
  qbus_client_options o;
  const int code = qbus_client_options_init(&o);
  if (code != QBUS_OK) return code;
  o.address = address;
  o.name = name;
  o.connect_timeout_ms = LONG_MS;
  if (region_threshold != 0) o.region_threshold = region_threshold;
  return qbus_client_connect(&o, out);
}

int info_of(const qbus_message* m, qbus_message_info* info) {
  const int code = qbus_message_info_init(info);
  return code != QBUS_OK ? code : qbus_message_info_get(m, info);
}

int session_of(const qbus_client* c, qbus_session_info* info) {
  memset(info, 0, sizeof *info);
  return qbus_client_session(c, info);
}

/* Sends failed so far by `c` (pipelined sends, settles and publishes), or -1 on an error. */
long long failures_of(const qbus_client* c) {
  uint64_t count = 0;
  return qbus_send_failures(c, &count, NULL, NULL) == QBUS_OK ? (long long)count : -1;
}

/* `len` bytes of a pattern that depends on the position and on `seed`, so that a byte out of
 * place or from another payload shows. */
unsigned char* make_pattern(size_t len, unsigned seed) {
  unsigned char* p = malloc(len);
  if (p == NULL) return NULL;
  for (size_t i = 0; i < len; ++i)
    p[i] = (unsigned char)((i * 31u + seed * 7u) ^ (i >> 8));
  return p;
}

/* The pid of a process that has exited (and so has no connection); 0 when fork failed. */
uint32_t gone_pid(void) {
  const pid_t child = fork();
  if (child < 0) return 0;
  if (child == 0) _exit(0);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return (uint32_t)child;
}

/* The address of a socket that does not exist, beside the daemon's. */
int missing_socket(const char* address, char* out, size_t out_len) {
  const char* slash = strrchr(address, '/');
  if (slash == NULL) return -1;
  const int n = snprintf(out, out_len, "%.*smissing.sock", (int)(slash - address + 1), address);
  return n > 0 && (size_t)n < out_len ? 0 : -1;
}
