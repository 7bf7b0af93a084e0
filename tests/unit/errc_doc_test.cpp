// proto/PROTOCOL.md restates the list of error codes (QBUS_ERRC in <qbus/errc.hpp>): its
// table in section 11 holds every wire code with its name, and its text names the codes
// local to libqbus. So does the C API's enum in <qbus/qbus.h> (QBUS_E_QUEUE_FULL = 22). A
// code added to one and not the others fails here.
#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>

#include "qbus/errc.hpp"

namespace qbus {
namespace {

std::string source_text(const std::string& path) {
  std::ifstream in(std::string(QBUS_SOURCE_DIR) + "/" + path);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string protocol_text() {
  return source_text("proto/PROTOCOL.md");
}

constexpr std::uint16_t kFirstLocalCode = 200;

TEST(ErrcDoc, ProtocolTableListsEveryWireCodeWithItsName) {
  std::string expected;
#define QBUS_ERRC_ROW(name, value) \
  if (value != 0 && value < kFirstLocalCode) expected += std::to_string(value) + " " #name "\n";
  QBUS_ERRC(QBUS_ERRC_ROW)
#undef QBUS_ERRC_ROW

  // The rows "| 22 | `queue_full` | ..." of section 11's table, in the document's order.
  const std::string whole = protocol_text();
  const auto from = whole.find("\n## 11. Errors");
  ASSERT_NE(from, std::string::npos);
  const std::string text = whole.substr(from, whole.find("\n## 12.", from) - from);
  const std::regex row(R"(\n\| (\d+) \| `([a-z_]+)` \|)");
  std::string documented;
  for (std::sregex_iterator it(text.begin(), text.end(), row), end; it != end; ++it) {
    documented += (*it)[1].str() + " " + (*it)[2].str() + "\n";
  }
  EXPECT_EQ(documented, expected);
}

TEST(ErrcDoc, ProtocolNamesTheLocalCodesInOrder) {
  std::string names;
  std::uint16_t first = 0;
  std::uint16_t last = 0;
#define QBUS_ERRC_LOCAL(name, value)                                 \
  if (value >= kFirstLocalCode) {                                    \
    names += std::string(names.empty() ? "" : ", ") + "`" #name "`"; \
    if (first == 0) first = value;                                   \
    last = value;                                                    \
  }
  QBUS_ERRC(QBUS_ERRC_LOCAL)
#undef QBUS_ERRC_LOCAL

  // The document wraps its lines anywhere: compare with every run of spaces as one.
  const std::string text =
      std::regex_replace(protocol_text(), std::regex(R"(\s+)"), std::string(" "));
  const std::string sentence = "Codes " + std::to_string(first) + "–" + std::to_string(last) +
                               " (" + names + ") are produced inside libqbus";
  EXPECT_NE(text.find(sentence), std::string::npos) << "PROTOCOL.md should say: " << sentence;
}

TEST(ErrcDoc, TheCApiNamesEveryCodeWithItsValue) {
  std::string expected;
  const auto constant = [](std::string_view name) {
    std::string c = name == "ok" ? "QBUS_OK" : "QBUS_E_";
    if (name != "ok") {
      for (const char ch : name)
        c += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    }
    return c;
  };
#define QBUS_ERRC_CONSTANT(name, value) expected += constant(#name) + " = " #value "\n";
  QBUS_ERRC(QBUS_ERRC_CONSTANT)
#undef QBUS_ERRC_CONSTANT

  const std::string text = source_text("client-lib/include/qbus/qbus.h");
  const std::regex constant_line(R"(\n  (QBUS_(?:OK|E_[A-Z_]+)) = (\d+))");
  std::string declared;
  for (std::sregex_iterator it(text.begin(), text.end(), constant_line), end; it != end; ++it) {
    declared += (*it)[1].str() + " = " + (*it)[2].str() + "\n";
  }
  EXPECT_EQ(declared, expected);
}

}  // namespace
}  // namespace qbus
