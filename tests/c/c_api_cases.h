/* The C API's test cases (c_api_cases.c), written in C11 and compiled as C so that
 * <qbus/qbus.h> is exercised the way a C program uses it; c_api_test.cpp runs each one
 * against a qbusd of its own.
 *
 * Each case connects its own clients to `address` ("unix:/path"), frees everything it made
 * on every path, and returns 0 when every check passed; otherwise non-zero, with `why`
 * (NUL-terminated, at most `why_len` bytes) naming the first check that failed: its file
 * and line, the call or condition, the code, and the thread's and the client's last error. */
#ifndef QBUS_TESTS_C_API_CASES_H
#define QBUS_TESTS_C_API_CASES_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

int qbus_ctest_options(const char* address, char* why, size_t why_len);
int qbus_ctest_send_receive(const char* address, char* why, size_t why_len);
int qbus_ctest_queues(const char* address, char* why, size_t why_len);
int qbus_ctest_batch(const char* address, char* why, size_t why_len);
int qbus_ctest_acks(const char* address, char* why, size_t why_len);
int qbus_ctest_direct(const char* address, char* why, size_t why_len);
int qbus_ctest_request_reply(const char* address, char* why, size_t why_len);
int qbus_ctest_queue_subscription(const char* address, char* why, size_t why_len);
int qbus_ctest_subjects(const char* address, char* why, size_t why_len);
int qbus_ctest_event_loop(const char* address, char* why, size_t why_len);
int qbus_ctest_regions(const char* address, char* why, size_t why_len);
int qbus_ctest_shared_regions(const char* address, char* why, size_t why_len);
int qbus_ctest_errors(const char* address, char* why, size_t why_len);
int qbus_ctest_null_handles(const char* address, char* why, size_t why_len);
int qbus_ctest_bad_arguments(const char* address, char* why, size_t why_len);
int qbus_ctest_handle_lifetimes(const char* address, char* why, size_t why_len);

#ifdef __cplusplus
}
#endif

#endif /* QBUS_TESTS_C_API_CASES_H */
