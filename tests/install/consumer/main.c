/* The C consumer of an installed libqbus: connects to the broker at $QBUS_ADDRESS, sends a
 * message to a queue through the C API and takes it back. Exit 0 when the same bytes came
 * back, 1 on any failure (with one line on stderr). */
#include <qbus/qbus.h>
#include <stdio.h>
#include <string.h>

static int failed(const char* call, int code) {
  fprintf(stderr, "c consumer: %s: %s (%s)\n", call, qbus_last_error(), qbus_strerror(code));
  return 1;
}

int main(int argc, char** argv) {
  const char* key = argc > 1 ? argv[1] : "install-test.c";
  const char payload[] = "hello from C";
  qbus_send_options options;
  qbus_client* client = NULL;
  qbus_message* message = NULL;
  const void* data = NULL;
  size_t len = 0;
  int rc = qbus_client_connect(NULL, &client);
  if (rc != QBUS_OK) return failed("qbus_client_connect", rc);
  qbus_send_options_init(&options);
  options.confirm = 1;
  rc = qbus_send(client, key, payload, sizeof payload - 1, &options);
  if (rc == QBUS_OK) rc = qbus_receive(client, key, 10000, 0, &message);
  if (rc != QBUS_OK) {
    failed("send and receive", rc);
    qbus_client_free(client);
    return 1;
  }
  rc = 1;
  if (message == NULL) {
    fprintf(stderr, "c consumer: nothing came back from queue %s\n", key);
  } else if (qbus_message_payload(message, &data, &len) != QBUS_OK || len != sizeof payload - 1 ||
             memcmp(data, payload, len) != 0) {
    fprintf(stderr, "c consumer: queue %s returned other bytes\n", key);
  } else {
    printf("c consumer: %s round trip ok\n", key);
    rc = 0;
  }
  qbus_message_free(message);
  qbus_client_free(client);
  return rc;
}
