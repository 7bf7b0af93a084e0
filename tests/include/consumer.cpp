// A program that uses libqbus from the source tree, compiled by in_tree.sh with nothing but
// the flags README.md documents for that. It touches every public header.
#include <qbus/client.hpp>
#include <qbus/errc.hpp>
#include <qbus/ring.hpp>

#include <iostream>

int main() {
  try {
    qbus::Client client;
    client.send("in-tree", "hello");
    client.sync();
  } catch (const qbus::Error& e) {
    std::cerr << qbus::errc_name(e.code()) << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
